"""Outbound calls to partners: retry policy, SSRF guard, per-partner limits, auth, sender."""
