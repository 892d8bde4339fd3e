"""Actions: partner endpoints, the calls defined on them, subscriptions of those calls to
events (with their filter language), and invoking an action now (proxy)."""
