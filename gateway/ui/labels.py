"""Values shown translated: each enumeration the pages display, by its message-key prefix.
Templates build these keys (`t("status." ~ d.status)`), so the catalog test checks every
`<prefix>.<value>` here exists in every language."""

from __future__ import annotations

from typing import Final

from gateway.auth.tokens import ADMIN_ROLES
from gateway.models import DeliveryStatus
from gateway.schemas import ENTITY_TYPES
from gateway.ui.forms import ERROR_STATUSES, KEYWORDS
from gateway.ui.i18n import LANGUAGES
from gateway.ui.partners import AUTH_TYPES

ENUMS: Final[dict[str, tuple[str, ...]]] = {
    "role": ADMIN_ROLES,
    "lang": LANGUAGES,
    "status": (
        *(s.value for s in DeliveryStatus),
        "active",
        "disabled",
        "pending",
        "replayed",
        "failing",
        "circuit_open",
    ),
    "entity_type": ENTITY_TYPES,
    "problem": KEYWORDS,
    "error": (*(str(s) for s in ERROR_STATUSES), "other"),
    "direction": ("inbound", "outbound"),
    "write": ("create", "update", "unchanged"),
    "diff": ("added", "removed", "changed"),
    "auth_type": (*AUTH_TYPES, "google_service_account"),
    "mode": ("deliver", "proxy"),
}
