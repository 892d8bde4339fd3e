"""The admin UI's collections: users, sessions and login throttles.

- `ui_users`: `{_id, tenant, email, role, password_hash, rev, created_at, updated_at,
  acting_until?}`, the e-mail unique per tenant, in `account_email`'s form
  (lower-cased, its domain in ASCII); `rev` moves with each change of role or password.
  `acting_until`: the user, an admin, is demoting or removing another admin
  (`start_acting`); until then no other admin demotes or removes this one.
- `ui_sessions`: `{_id: session id, tenant, user_id?, user_rev?, subject, role, created_at,
  expires_at, forms?}`; logout deletes the record, and a TTL index drops expired ones. A user's
  session stands while the user is at `user_rev`. `forms`: the one-time ids of the last
  FORMS_KEPT forms posted in the session (a form sent again is refused).
- `ui_login_throttle`: `{_id: key, failures, locked_until?, updated_at}` per login target
  (`password:<tenant>:<e-mail>`, a tenant name and an e-mail address in `account_email`'s
  form, so a few hundred characters at most; or `token:<client address>`), whether the user
  exists or not; `failures` counts each attempt before it is checked (`count`, a
  compare-and-set on it), so that concurrent logins, in any process, are counted one by one;
  dropped a day after its last attempt.
"""

from __future__ import annotations

import contextlib
import logging
import unicodedata
from collections.abc import Container
from datetime import datetime
from typing import Any, Final

import idna
from pymongo import ASCENDING, IndexModel

from gateway.clock import utcnow
from gateway.errors import Conflict
from gateway.store.client import Collection, Database, Doc, scoped, translate_errors
from gateway.store.expiry import Expiry
from gateway.store.migrations import record_step, step_done
from gateway.store.resources import TenantResources

log = logging.getLogger(__name__)

THROTTLE_RETENTION_SECONDS: Final = 24 * 3600
# How many of a session's posted forms are remembered (a form sent again is refused).
FORMS_KEPT: Final = 500
USER_INDEXES = [
    IndexModel([("tenant", ASCENDING), ("email", ASCENDING)], unique=True, name="email"),
]
SESSION_INDEXES = [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="ttl")]
THROTTLE_INDEXES = [
    IndexModel(
        [("updated_at", ASCENDING)], expireAfterSeconds=THROTTLE_RETENTION_SECONDS, name="ttl"
    )
]


# The one-time step's name: a new one whenever `account_email`'s form changes, so that every
# start puts the users stored in the former form in the new one (".2": lower-cased before NFC).
EMAIL_STEP: Final = "ui_users.email.form.2"


def account_email(text: str) -> str:
    """A user's e-mail in the one form it is stored, looked up and compared in, whoever typed
    it (the Users page, the command line, the login form): trimmed, lower-cased and NFC (in
    that order: lower case can undo NFC, `J̌` lower-cased is `j` and a caron, whose NFC is
    `ǰ`; so the form of a form is itself), its domain in ASCII: IDNA 2008 with the UTS 46
    mapping, as browsers send an `<input type=email>` and as mail is sent (`ana@Açao.com.br`
    → `ana@xn--aao-2la.com.br`), without the dot that may end it (`acme.com.br.` is
    `acme.com.br`). A domain that is no valid name is left as typed (creating the user
    refuses it)."""
    lowered = unicodedata.normalize("NFC", text.strip()).lower()
    local, at, domain = unicodedata.normalize("NFC", lowered).rpartition("@")
    if not domain.isascii():
        with contextlib.suppress(idna.IDNAError):
            domain = idna.encode(domain, uts46=True).decode("ascii")
    return f"{local}{at}{domain.removesuffix('.')}"


async def put_emails_in_form(users: Collection, migrations: Collection) -> int:
    """The one-time step that puts the users stored before `account_email` existed in its
    form (a domain stored as typed, `ana@açao.com.br`, was never found by a browser's login,
    which sends it in ASCII); how many it changed. Their sessions end (the revision moves).
    One whose new form another user of its tenant has already is left as it was, and logged:
    it is listed, changed and removed by its stored e-mail (`AccountService._user`)."""
    if await step_done(migrations, EMAIL_STEP):
        return 0
    changed = 0
    with translate_errors():
        stored = await users.find({}, {"tenant": 1, "email": 1}).to_list(None)
    for doc in stored:
        email = account_email(doc["email"])
        if email == doc["email"]:
            continue
        try:
            with translate_errors():
                guard = {"_id": doc["_id"], "email": doc["email"]}
                change = {"$set": {"email": email}, "$inc": {"rev": 1}}
                changed += (await users.update_one(guard, change)).modified_count
        except Conflict:
            log.warning(
                "admin UI user %r of tenant %r kept as stored: %r is another user's",
                doc["email"],
                doc["tenant"],
                email,
            )
    await record_step(migrations, EMAIL_STEP, utcnow())
    return changed


class UiUserStore(TenantResources):
    async def by_email(self, tenant: str, email: str) -> Doc | None:
        with translate_errors():
            return await self._c.find_one(scoped(tenant, {"email": email}))

    async def of_tenant(self, tenant: str) -> list[Doc]:
        with translate_errors():
            cursor = self._c.find(scoped(tenant, {}), {"password_hash": 0}).sort("email", 1)
            return await cursor.to_list(None)

    async def replace_fields(
        self, user_id: Any, fields: Doc, *, unless_acting_at: datetime | None = None
    ) -> bool:
        """Set these fields and move the user's revision (which ends its sessions); with
        `unless_acting_at`, only if the user is not acting then (`start_acting`). Whether
        the user was changed."""
        query: Doc = {"_id": user_id}
        if unless_acting_at is not None:
            query.update(_not_acting(unless_acting_at))
        with translate_errors():
            result = await self._c.update_one(query, {"$set": fields, "$inc": {"rev": 1}})
        return result.matched_count == 1

    async def delete_unless_acting(self, tenant: str, user_id: Any, now: datetime) -> bool:
        """Remove the user unless it is acting now (`start_acting`); whether it went."""
        with translate_errors():
            result = await self._c.delete_one(scoped(tenant, {"_id": user_id, **_not_acting(now)}))
        return result.deleted_count == 1

    async def start_acting(self, tenant: str, email: str, now: datetime, until: datetime) -> bool:
        """Mark an admin as demoting or removing another admin, until `until` (the end of a
        mark its process never took back): whether it is marked, False when the user is not
        an admin (any more), or acting already. Together with the `unless_acting_at` of the
        write to the other admin, two admins demoting each other at once cannot both succeed:
        the one whose write comes second finds the other acting, or itself demoted already."""
        query = scoped(tenant, {"email": email, "role": "admin", **_not_acting(now)})
        with translate_errors():
            result = await self._c.update_one(query, {"$set": {"acting_until": until}})
        return result.matched_count == 1

    async def stop_acting(self, tenant: str, email: str, until: datetime) -> None:
        """Take back the mark `start_acting` set (not a later one of another call's)."""
        query = scoped(tenant, {"email": email, "acting_until": until})
        with translate_errors():
            await self._c.update_one(query, {"$unset": {"acting_until": ""}})


def _not_acting(now: datetime) -> Doc:
    return {"$or": [{"acting_until": {"$exists": False}}, {"acting_until": {"$lte": now}}]}


class UiSessionStore:
    def __init__(self, db: Database) -> None:
        self._c = db["ui_sessions"]

    async def insert(self, doc: Doc) -> None:
        with translate_errors():
            await self._c.insert_one(doc)

    async def get(self, session_id: str) -> Doc | None:
        with translate_errors():
            return await self._c.find_one({"_id": session_id}, {"forms": 0})

    async def claim_form(self, session_id: str, once: str) -> bool:
        """Remember that the form `once` was posted in the session; False when it was
        already (the browser sent it again: Back, Reload)."""
        with translate_errors():
            result = await self._c.update_one(
                {"_id": session_id, "forms": {"$ne": once}},
                {"$push": {"forms": {"$each": [once], "$slice": -FORMS_KEPT}}},
            )
        return result.matched_count == 1

    async def release_form(self, session_id: str, once: str) -> None:
        with translate_errors():
            await self._c.update_one({"_id": session_id}, {"$pull": {"forms": once}})

    async def delete(self, session_id: str) -> None:
        with translate_errors():
            await self._c.delete_one({"_id": session_id})

    async def delete_for_user(self, tenant: str, user_id: str) -> int:
        with translate_errors():
            result = await self._c.delete_many(scoped(tenant, {"user_id": user_id}))
        return result.deleted_count


class LoginThrottleStore:
    def __init__(self, db: Database) -> None:
        self._c = db["ui_login_throttle"]

    async def get(self, key: str) -> Doc | None:
        with translate_errors():
            return await self._c.find_one({"_id": key})

    async def count(
        self,
        key: str,
        before: Doc | None,
        failures: int,
        locked_until: datetime | None,
        now: datetime,
    ) -> bool:
        """Move the target from `before` (as read; None: no record) to `failures` in a row,
        locked until `locked_until` when it is given: whether it was still as read (False:
        another login counted meanwhile, and this one must read it again)."""
        fields: Doc = {"failures": failures, "updated_at": now}
        if locked_until is not None:
            fields["locked_until"] = locked_until
        try:
            with translate_errors():
                if before is None:
                    await self._c.insert_one({"_id": key, **fields})
                    return True
                query = {"_id": key, "failures": before["failures"]}
                result = await self._c.update_one(query, {"$set": fields})
        except Conflict:  # another login's record was inserted first
            return False
        return result.matched_count == 1

    async def uncount(self, key: str, before: Doc | None, failures: int) -> None:
        """Take back a `count` from `before` to `failures` (its login came to no verdict),
        unless another login counted since (then it stands: counting too many is safe)."""
        query = {"_id": key, "failures": failures}
        with translate_errors():
            if before is None:
                await self._c.delete_one(query)
                return
            update: Doc = {"$set": {"failures": before["failures"]}}
            if "locked_until" in before:
                update["$set"]["locked_until"] = before["locked_until"]
            else:
                update["$unset"] = {"locked_until": ""}
            await self._c.update_one(query, update)

    async def clear(self, key: str) -> None:
        with translate_errors():
            await self._c.delete_one({"_id": key})


class UiAccountStores:
    def __init__(self, db: Database, expiry: Expiry) -> None:
        self._db = db
        self._expiry = expiry
        self.users = UiUserStore(db["ui_users"])
        self.sessions = UiSessionStore(db)
        self.throttle = LoginThrottleStore(db)

    async def ensure_indexes(self, present: Container[str] | None = None) -> None:
        """`present`: the collections at start (`indexes_by_name`)."""
        indexes: dict[str, Any] = {
            "ui_users": USER_INDEXES,
            "ui_sessions": SESSION_INDEXES,
            "ui_login_throttle": THROTTLE_INDEXES,
        }
        for name, models in indexes.items():
            await self._expiry.create_indexes(self._db[name], models, present)
