"""Values shown translated: each enumeration the pages display, by its message-key prefix.
Templates build these keys (`t("status." ~ d.status)`), so the catalog test checks every
`<prefix>.<value>` here exists in every language."""

from __future__ import annotations

from typing import Final

from gateway.auth.tokens import ADMIN_ROLES
from gateway.mapping_files.dry_run import WRITES
from gateway.models import DeliveryKind, DeliveryStatus, RunStatus
from gateway.outbound.partner_auth import AUTH_TYPES
from gateway.outbound.verdict import Verdict
from gateway.schemas import ENTITY_TYPES
from gateway.ui.actions import FLAGS
from gateway.ui.forms import ERROR_STATUSES, KEYWORDS
from gateway.ui.i18n import LANGUAGES

# What a flow run's step (or one of its messages) ended with (docs/flows.md, "Runs").
STEP_OUTCOMES: Final = (
    "answered",
    "passed",
    "stopped",
    "skipped",
    "queued",
    "nobody",
    "failed",
    "written",
    "unchanged",
)

# What caused an entity's write, as its events record it (docs/concepts.md); an assignment's
# source (`hr`, `erp`) is shown as it is.
ORIGIN_KINDS: Final = ("admin", "trigger", "action", "schedule", "flow", "notification", "fold")

ENUMS: Final[dict[str, tuple[str, ...]]] = {
    "role": ADMIN_ROLES,
    "lang": LANGUAGES,
    "status": (
        *(s.value for s in DeliveryStatus),
        "active",
        "paused",
        "running",
        "disabled",
        "pending",
        "replayed",
        "failing",
        "circuit_open",
    ),
    "entity_type": ENTITY_TYPES,
    "entity_one": ENTITY_TYPES,  # one entity's type, before its key: "Veículo ABC1D23"
    "origin": ORIGIN_KINDS,
    "problem": KEYWORDS,
    "error": (*(str(s) for s in ERROR_STATUSES), "other"),
    "direction": ("inbound", "outbound"),
    "write": WRITES,
    "diff": ("added", "removed", "changed"),
    "auth_type": AUTH_TYPES,  # every type a partner's credentials can have
    "mode": ("deliver", "proxy"),
    "kind": tuple(k.value for k in DeliveryKind),
    "run_status": tuple(s.value for s in RunStatus),
    "outcome": STEP_OUTCOMES,
    "run_outcome": ("ok", "more", "held", "failed", "lost_lease"),
    # Where a schedule lands pages: "entities" here; the fleet lane adds "positions".
    "target_type": ("entities", "positions"),
    "send_result": tuple(v.value for v in Verdict),
    "during": ("delay", "suppress"),
    "part": ("subject", "text", "html", "title", "body"),
    "action_flag": FLAGS,
}
