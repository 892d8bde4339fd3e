"""Notifications: channels (e-mail, push, SMS), templates, their senders, and the driver
assignments that say who receives a vehicle's alerts. See docs/notifications.md."""
