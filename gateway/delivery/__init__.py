"""Delivery: events fanned out to deliveries, and the worker that sends them (prepare → send →
record → retry), partner health, and the admin's view of deliveries."""
