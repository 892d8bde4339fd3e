"""Use case: who may use the admin UI — users of a tenant with scrypt-hashed passwords, or an
admin token pasted in — and their sessions, with a lockout after repeated failed logins.

A session is a record in the store (tenant, role, expiry) named by a random id that the UI
keeps in a signed cookie (`auth/sessions.py`); logout deletes the record, so a copied cookie
dies with it. A user's session also names the user's revision: a new role or password, or
the user's removal, ends every session the user had (checked on each use, so a login that
was in flight meanwhile does not outlive the change). Failed logins are counted per target
(tenant and e-mail, or the client's address for tokens) whether the user exists or not, so
the lockout says nothing about which e-mails exist; after `MAX_FAILURES` in a row the target
is locked for a while that doubles with every further failure, up to `MAX_LOCK`. An attempt
is counted before its password is checked (and the count cleared when it matches), so logins
sent at once get no more checks than logins sent one after another. A tenant or e-mail no
user can have is refused alike, and counts nowhere: no record is stored for what a client
made up.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from gateway.audit import log_change
from gateway.auth.passwords import hashed, matches, password_problem
from gateway.auth.sessions import new_session_id
from gateway.auth.tokens import ADMIN_ROLES, TENANT, AdminRole, AdminTokenVerifier
from gateway.clock import as_stored, utcnow
from gateway.errors import (
    Conflict,
    FieldProblem,
    GatewayError,
    InvalidPayload,
    KeysUnavailable,
    NotFound,
    RateLimited,
    Unauthorized,
)
from gateway.store import Doc, Store, new_id
from gateway.store.ui_accounts import account_email

SESSION_TTL: Final = timedelta(hours=8)
MAX_FAILURES: Final = 5
FIRST_LOCK: Final = timedelta(minutes=1)
MAX_LOCK: Final = timedelta(minutes=15)
ACTING: Final = timedelta(seconds=30)
"""How long an admin's mark as demoting or removing another admin stands if its process
never takes it back (a crash): its own change takes a few database round trips."""
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\Z")
# A login's e-mail longer than this, as typed, is no e-mail (spaces, NFD marks and Unicode
# domains fit well under it): refused without normalising it.
_TYPED_EMAIL: Final = 1024
# Rounds a login's count may lose to other logins of its target counting at the same time.
_COUNT_TRIES: Final = MAX_FAILURES + 2
_REFUSED: Final = "wrong tenant, e-mail or password"
# A domain's label: letters, digits and hyphens, none at either end (RFC 1123), 63 at most.
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_PUNYCODE: Final = "xn--"


@dataclass(frozen=True, slots=True)
class UiSession:
    id: str
    tenant: str
    subject: str  # the user's e-mail, or "token:<subject>" for a pasted admin token
    role: AdminRole
    expires_at: datetime

    @property
    def can_change(self) -> bool:
        return self.role == "admin"

    @property
    def user(self) -> str | None:
        """The user's e-mail; None for a pasted admin token's session."""
        return None if self.subject.startswith("token:") else self.subject


class AccountService:
    def __init__(
        self,
        store: Store,
        verifier: AdminTokenVerifier,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._verifier = verifier
        self._clock = clock

    # -- users -------------------------------------------------------------------------------

    async def create_user(self, tenant: str, email: str, role: str, password: str) -> Doc:
        """A new user; InvalidPayload names each bad field, Conflict a taken e-mail."""
        email = account_email(email)
        problems = []
        if not TENANT.match(tenant):
            problems.append(
                FieldProblem("/tenant", "a tenant is 1-100 letters, digits, _.-", "pattern")
            )
        if not _EMAIL.match(email):
            problems.append(FieldProblem("/email", f"{email!r} is not an e-mail address", "format"))
        elif not _is_host_name(domain := email.rpartition("@")[2]):
            message = f"{email!r} is not an e-mail address: {domain!r} is not a valid domain name"
            problems.append(FieldProblem("/email", message, "format"))
        if role not in ADMIN_ROLES:
            problems.append(
                FieldProblem("/role", f"role is one of {', '.join(ADMIN_ROLES)}", "enum")
            )
        if (why := password_problem(password)) is not None:
            problems.append(FieldProblem("/password", why, "minLength"))
        if problems:
            raise InvalidPayload("invalid user", problems)
        now = self._clock()
        doc: Doc = {
            "_id": new_id(),
            "tenant": tenant,
            "email": email,
            "role": role,
            "password_hash": await hashed(password),
            "rev": 1,
            "created_at": now,
            "updated_at": now,
        }
        await self._store.ui.users.insert(doc)
        log_change("user", email, "created", tenant, role=role)
        return doc

    async def users(self, tenant: str) -> list[Doc]:
        """A tenant's users by e-mail, without their password hashes."""
        return await self._store.ui.users.of_tenant(tenant)

    async def change_user(
        self,
        tenant: str,
        email: str,
        *,
        role: str | None = None,
        password: str | None = None,
        by: str | None = None,
    ) -> int:
        """A user's new role or password. Every session the user had ends (a session carries
        the role it was opened with, and a new password is how a leaked one is shut out);
        how many ended. The role the user already has changes nothing and ends nothing.
        `by`: the admin user asking (the UI), who cannot change their own account and must
        still be an admin when an admin is demoted (`_as_admin`); None for an admin token or
        the command line."""
        problems = []
        if role is not None and role not in ADMIN_ROLES:
            problems.append(
                FieldProblem("/role", f"role is one of {', '.join(ADMIN_ROLES)}", "enum")
            )
        if password is not None and (why := password_problem(password)) is not None:
            problems.append(FieldProblem("/password", why, "minLength"))
        if problems:
            raise InvalidPayload("invalid change", problems)
        user = await self._user(tenant, email, by)
        if role == user["role"]:
            role = None  # the role the user has: nothing to end a session for
        if role is None and password is None:
            return 0
        fields: Doc = {"updated_at": self._clock()}
        if role is not None:
            fields["role"] = role
        if password is not None:
            fields["password_hash"] = await hashed(password)
        users = self._store.ui.users
        if by is not None and role is not None and user["role"] == "admin":
            async with self._as_admin(tenant, by) as now:
                if not await users.replace_fields(user["_id"], fields, unless_acting_at=now):
                    raise Conflict(f"{user['email']} is changing another admin; try again")
        else:
            await users.replace_fields(user["_id"], fields)
        if role is not None:
            log_change("user", user["email"], "role_changed", tenant, role=role)
        if password is not None:
            log_change("user", user["email"], "password_changed", tenant)
        return await self._store.ui.sessions.delete_for_user(tenant, str(user["_id"]))

    async def delete_user(self, tenant: str, email: str, *, by: str | None = None) -> int:
        """Remove a user and end the user's sessions; how many ended. `by` as for
        `change_user`."""
        user = await self._user(tenant, email, by)
        users = self._store.ui.users
        if by is not None and user["role"] == "admin":
            async with self._as_admin(tenant, by) as now:
                if not await users.delete_unless_acting(tenant, user["_id"], now):
                    raise Conflict(f"{user['email']} is changing another admin; try again")
        else:
            await users.delete(tenant, str(user["_id"]))
        log_change("user", user["email"], "deleted", tenant)
        return await self._store.ui.sessions.delete_for_user(tenant, str(user["_id"]))

    @contextlib.asynccontextmanager
    async def _as_admin(self, tenant: str, email: str) -> AsyncIterator[datetime]:
        """While the admin `email` demotes or removes another admin: marked as acting, so that
        no other admin demotes or removes it meanwhile (the time to write with). Two admins
        demoting each other at once each checked that they were not demoting themselves,
        then both demotions landed: no admin user was left. Now the second write finds the
        other admin acting, or the second mark finds its admin demoted already."""
        now = self._clock()
        until = as_stored(now + ACTING)
        if not await self._store.ui.users.start_acting(tenant, email, now, until):
            raise Conflict(
                "your account is no longer an admin, or is changing another admin meanwhile"
            )
        try:
            yield now
        finally:
            await self._store.ui.users.stop_acting(tenant, email, until)

    async def _user(self, tenant: str, email: str, by: str | None) -> Doc:
        """The user to change or remove: the one stored with exactly this e-mail, else the one
        with its `account_email` form. A user the one-time step kept as stored (its form is
        another user's) is reached by the e-mail the list shows, never mistaken for the other
        (it cannot log in: the login takes the form). `by` (the admin asking) cannot be it."""
        users = self._store.ui.users
        user = None
        if TENANT.match(tenant):
            user = await users.by_email(tenant, email.strip()) or await users.by_email(
                tenant, account_email(email)
            )
        if user is None:
            raise NotFound(f"no user {account_email(email)!r} in tenant {tenant!r}")
        if by is not None and user["email"] == by:
            message = "you cannot change or remove the account you are signed in with"
            raise InvalidPayload(message, [FieldProblem("/email", message, "other")])
        return user

    # -- logging in and out ------------------------------------------------------------------

    async def login(self, tenant: str, email: str, password: str) -> UiSession:
        """A session for a user's password. Its attempt is counted (and the target locked at
        `MAX_FAILURES`) before the password is checked, and the count cleared when it matches:
        logins sent at once, to any process, get no more checks than one after another."""
        email = account_email(email) if len(email) <= _TYPED_EMAIL else ""
        if not TENANT.match(tenant) or not _EMAIL.match(email):
            # No user has such a tenant or e-mail: refused as a wrong password, after the same
            # check, with no record stored (what a client may post is far larger than a key).
            await matches(password, None)
            raise Unauthorized(_REFUSED)
        key = f"password:{tenant}:{email}"
        before, failures = await self._count(key)
        try:
            user = await self._store.ui.users.by_email(tenant, email)
            # scrypt is CPU- and memory-bound for ~0.2 s: on its own threads (passwords.py).
            matched = await matches(password, user["password_hash"] if user else None)
        except BaseException:  # no verdict (too many checks at once, the store): not counted
            await self._store.ui.throttle.uncount(key, before, failures)
            raise
        if user is None or not matched:
            raise Unauthorized(_REFUSED)
        await self._store.ui.throttle.clear(key)
        return await self._open(tenant, email, user["role"], user=user)

    async def login_with_token(self, token: str, client: str) -> UiSession:
        """A session for a valid admin token, whatever failed before: the lockout of a
        client's junk tokens (`token:<client>`) never refuses a valid one, so another client
        sharing its address cannot lock admins out. Guessing a signed token is hopeless; the
        lockout (and the admin limit) bound what a flood of junk costs. KeysUnavailable when
        the identity provider's keys cannot be fetched: no token is judged, none counted."""
        key = f"token:{client}"
        try:
            claims = await self._verifier.verify(token.strip())
        except KeysUnavailable:  # the identity provider's: no token can be judged now
            raise
        except GatewayError:
            await self._count(key)
            raise Unauthorized("this admin token is not valid") from None
        await self._store.ui.throttle.clear(key)
        expires = claims.expires_at
        return await self._open(
            claims.tenant, f"token:{claims.subject}", claims.role, not_after=expires
        )

    async def session(self, session_id: str) -> UiSession | None:
        """The live session with this id; None when it is unknown, ended or expired."""
        doc = await self._store.ui.sessions.get(session_id)
        if doc is None:
            return None
        expires = doc["expires_at"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires <= self._clock() or not await self._user_unchanged(doc):
            await self._store.ui.sessions.delete(session_id)
            return None
        return UiSession(session_id, doc["tenant"], doc["subject"], doc["role"], expires)

    async def claim_form(self, session_id: str, once: str) -> bool:
        """A form's one-time id, posted in the session: False when it was posted before."""
        return await self._store.ui.sessions.claim_form(session_id, once)

    async def release_form(self, session_id: str, once: str) -> None:
        """Forget a form's one-time id (its handling failed: it may be sent again)."""
        await self._store.ui.sessions.release_form(session_id, once)

    async def logout(self, session_id: str) -> None:
        await self._store.ui.sessions.delete(session_id)

    async def _user_unchanged(self, session: Doc) -> bool:
        """Whether a user's session still stands: the user is there, at the revision the
        session was opened at (a pasted token's session has no user)."""
        if "user_id" not in session:
            return True
        user = await self._store.ui.users.get(session["tenant"], session["user_id"])
        if user is None:
            return False
        return bool(session.get("user_rev", user["rev"]) == user["rev"])

    async def _open(
        self,
        tenant: str,
        subject: str,
        role: AdminRole,
        *,
        user: Doc | None = None,
        not_after: datetime | None = None,
    ) -> UiSession:
        now = self._clock()
        expires = now + SESSION_TTL
        if not_after is not None:
            expires = min(expires, not_after)
        doc: dict[str, Any] = {
            "_id": new_session_id(),
            "tenant": tenant,
            "subject": subject,
            "role": role,
            "created_at": now,
            "expires_at": expires,
        }
        if user is not None:
            doc["user_id"], doc["user_rev"] = str(user["_id"]), user["rev"]
        await self._store.ui.sessions.insert(doc)
        return UiSession(doc["_id"], tenant, subject, role, expires)

    # -- the lockout -------------------------------------------------------------------------

    async def _count(self, key: str) -> tuple[Doc | None, int]:
        """Count one more failed login on `key`, locking it from the `MAX_FAILURES`-th on,
        before the attempt is checked: RateLimited while it is locked. The record as it was,
        and the failures now (`uncount` takes it back). A compare-and-set: two logins at once
        never count as one, so no more than `MAX_FAILURES` passwords are ever checked before
        the lock, nor more than one in each lock's time after it."""
        throttle = self._store.ui.throttle
        for _ in range(_COUNT_TRIES):
            now = self._clock()
            before = await throttle.get(key)
            if before is not None and (until := before.get("locked_until")) is not None:
                if until.tzinfo is None:
                    until = until.replace(tzinfo=UTC)
                if (wait := (until - now).total_seconds()) > 0:
                    raise RateLimited(
                        f"too many failed logins; try again in {int(wait) + 1} s",
                        retry_after=int(wait) + 1,
                    )
            failures = (before["failures"] if before else 0) + 1
            lock = now + lock_time(failures) if failures >= MAX_FAILURES else None
            if await throttle.count(key, before, failures, lock, now):
                return before, failures
        # Lost every round to other logins of the target: they lock it within MAX_FAILURES.
        raise RateLimited("too many logins for this account at once; try again in a second")


def lock_time(failures: int) -> timedelta:
    """How long a target stays locked after its `failures`-th failure in a row."""
    doublings = min(failures - MAX_FAILURES, 10)
    return min(FIRST_LOCK * (1 << doublings), MAX_LOCK)


def _is_host_name(domain: str) -> bool:
    """Whether a domain in `account_email`'s form (ASCII, lower case) is a host name: 253
    characters at most, labels of `_LABEL` (none empty: `acme..com.br`), a punycode label
    one that decodes (`xn--zz` does not). A non-ASCII domain is one IDNA refused."""
    if len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in domain.split(".")):
        return False
    for label in domain.split("."):
        if label.startswith(_PUNYCODE):
            try:
                label.removeprefix(_PUNYCODE).encode("ascii").decode("punycode")
            except UnicodeError:
                return False
    return True
