"""The `gateway.audit` log: one `INFO` line per change an operator must redo after restoring
an older backup (docs/operations.md "Backups"), the record of it outside the database.

What is logged: a trigger's access (its tokens and credentials), a partner, a subscription,
an admin-UI user, a notification channel, each by the use case that makes the change, so
the API, the admin UI and the command line are logged alike. A line names what changed,
never a value of it: no credential, password, signing secret, URL or SMTP setting, only the
names of the members that changed (`members`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

_audit = logging.getLogger("gateway.audit")


def log_change(
    subject: str,
    ident: str,
    change: str,
    tenant: str,
    *,
    label: str | None = None,
    members: Iterable[str] = (),
    **fields: Any,
) -> None:
    """`<label> changed: <ident> <change> [<members>] of tenant <tenant>`, with the fields
    `tenant`, `<subject>` (the id), `change`, `members` (a sorted list, when any) and
    `fields`. `label` is `subject` unless given (a trigger's is "trigger access")."""
    named = sorted(members)
    said = f" [{', '.join(named)}]" if named else ""
    extra: dict[str, Any] = {"tenant": tenant, subject: ident, "change": change, **fields}
    if named:
        extra["members"] = named
    _audit.info(
        "%s changed: %s %s%s of tenant %s",
        label or subject,
        ident,
        change,
        said,
        tenant,
        extra=extra,
    )


def changed_members(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    given: Iterable[str],
    secret: Iterable[str] = (),
) -> list[str]:
    """The members `given` (a change's body names them) whose stored value `after` the change
    differs from the one `before` it. Both are the stored forms, normalised alike (defaults
    filled in, lists sorted, ids and addresses written as stored), so a body re-sending what is
    stored is no change, however it spells it. Those in `secret` (stored sealed, so not
    compared) count as changed whenever given."""
    sealed = set(secret)
    return sorted(k for k in given if k in sealed or before.get(k) != after.get(k))
