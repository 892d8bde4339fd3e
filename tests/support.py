"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

from datetime import timedelta

from gateway.auth.keyring import KeyRing
from gateway.auth.tokens import issue_admin_token

SECRET_KEY = "test-secret-key-0123456789abcdef0123456789abcdef"


def admin_token(
    tenant: str = "acme",
    role: str = "admin",
    ttl: timedelta = timedelta(hours=1),
    secret: str = SECRET_KEY,
    now: float | None = None,
) -> str:
    return issue_admin_token(
        KeyRing.from_secret(secret),
        tenant=tenant,
        role=role,  # type: ignore[arg-type]
        subject="tester",
        ttl=ttl,
        now=now,
    )


def auth(tenant: str = "acme", role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(tenant, role)}"}
