"""The UI's navigation: one entry per page family, in menu order. A new family adds its line
here, its routes in `routes.py` and its words in `messages/<family>.yaml`."""

from __future__ import annotations

from typing import Final, NamedTuple


class NavItem(NamedTuple):
    path: str  # under /admin
    label: str  # a message key


NAV: Final = (
    NavItem("/", "nav.dashboard"),
    NavItem("/triggers", "nav.triggers"),
    NavItem("/mappings", "nav.mappings"),
    NavItem("/schedules", "nav.schedules"),
    NavItem("/partners", "nav.partners"),
    NavItem("/actions", "nav.actions"),
    NavItem("/subscriptions", "nav.subscriptions"),
    NavItem("/events", "nav.events"),
    NavItem("/deliveries", "nav.deliveries"),
    NavItem("/flows", "nav.flows"),
    NavItem("/channels", "nav.channels"),
    NavItem("/templates", "nav.templates"),
    NavItem("/notification-settings", "nav.notification_settings"),
    NavItem("/entities/vehicle", "nav.entities"),
    NavItem("/kinds", "nav.kinds"),
    NavItem("/geofences", "nav.geofences"),
    NavItem("/maintenance-plans", "nav.maintenance_plans"),
    NavItem("/fleet-settings", "nav.fleet_settings"),
    NavItem("/users", "nav.users"),
)
