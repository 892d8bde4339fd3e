"""schemathesis fuzzes the live app from its own /openapi.json: a real `gateway serve`, the
admin routes with an admin token, /hooks with a trigger's token (its id fixed), every route
with a forged token. Bounded: a few examples per operation, about a minute in all.

Excluded, and why (each is work left, see docs/reliability.md):
- `positive_data_acceptance` on the admin create/update routes whose request schemas are
  still looser than the services' own validation (a generated "valid" body the service
  refuses with 422: e.g. an action with an empty path, a kind with an empty schema), and on
  /hooks, whose body is validated by each trigger's own input schema and mapping (dynamic:
  not describable in one document; a 422 lists every failing field);
- `positive_data_acceptance` on POST /geofences and PATCH /geofences/{ref}: a polygon's ring
  must close and must not cross itself, which JSON Schema cannot say (the document says it in
  words; a generated ring is refused with a 422 naming it);
- `positive_data_acceptance` on the notify and schedules lanes' routes (flows, templates,
  channels, notification settings, schedules, driver assignments): the same work, not done;
- `allow_header_conformance` / `unsupported_method` on /rejected/replay, /deliveries/replay,
  /mappings/test, /flows/test and /templates/preview: the templated sibling route
  (/rejected/{id}, ...) also matches them, so aiohttp's Allow lists its methods too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Gateway
from tests.support import admin_token

ST = str(Path(sys.executable).with_name("st"))
_LOOSE = (
    r"^/api/v1/(actions|kinds|kinds/\{name\}|mappings|mappings/test|mappings/\{name\}/activate"
    r"|partners|subscriptions|triggers|triggers/\{id\}|triggers/\{id\}/rotate"
    # Routes of the notify and schedules lanes, not aligned yet (same class of findings).
    r"|entities/vehicle/\{ref\}/drivers|flows|flows/test|flows/\{name\}/activate"
    r"|flows/\{name\}/diff|flows/\{name\}/versions/\{version\}|channels"
    r"|channels/\{ref\}/test|schedules|templates|templates/preview|notification-settings"
    # A polygon's closing and simplicity are not expressible in JSON Schema.
    r"|geofences|geofences/\{ref\})$"
)
_OVERLAPPING = (
    r"^/api/v1/(rejected/replay|deliveries/replay|mappings/test|flows/test|templates/preview)$"
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, mongodb_uri: str) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("schemathesis")
    served = Gateway(
        data,
        MONGODB_URI=mongodb_uri,
        GATEWAY_DATABASE=f"st_{os.getpid()}",
        GATEWAY_LOG_LEVEL="ERROR",
    ).start()
    yield served
    served.stop()


def _fuzz(gateway: Gateway, token: str, *options: str, config: str | None = None) -> None:
    cmd = [ST]
    if config is not None:
        cmd += ["--config-file", config]
    cmd += [
        "run",
        f"{gateway.url}/openapi.json",
        "-H",
        f"Authorization: Bearer {token}",
        "--max-examples",
        "8",
        "--seed",
        "20261202",
        "--continue-on-failure",
        "--max-failures",
        "20",
        *options,
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=gateway.data_dir, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


@pytest.mark.timeout(300)  # a fuzzing run of every route, on a shared machine
def test_admin_routes_match_their_document(gateway: Gateway) -> None:
    _fuzz(
        gateway,
        admin_token(),
        "--exclude-path-regex",
        "^/hooks",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance,allow_header_conformance,unsupported_method",
    )
    # positive_data_acceptance, except where the schemas are known looser (see above)
    _fuzz(
        gateway,
        admin_token(),
        "--exclude-path-regex",
        f"^/hooks|{_LOOSE}|{_OVERLAPPING}",
        "--checks",
        "positive_data_acceptance,allow_header_conformance,unsupported_method",
    )


@pytest.mark.timeout(300)  # a fuzzing run of every route, on a shared machine
def test_hooks_match_their_document(gateway: Gateway, tmp_path: Path) -> None:
    status, _, trigger = gateway.request(
        "POST",
        "/api/v1/triggers",
        {"name": "fuzz", "entity_type": "vehicle", "methods": ["GET", "POST"]},
        headers={"Authorization": f"Bearer {admin_token()}"},
    )
    assert status == 201, trigger
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.trigger_id" = "{trigger["id"]}"\n')
    _fuzz(
        gateway,
        trigger["token"],
        "--include-path-regex",
        "^/hooks",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        config=str(config),
    )


@pytest.mark.timeout(300)  # a fuzzing run of every route, on a shared machine
def test_every_route_matches_its_document_with_a_forged_token(gateway: Gateway) -> None:
    forged = admin_token(secret="not-the-gateway-secret-0123456789abcdef")
    _fuzz(
        gateway,
        forged,
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance,allow_header_conformance,unsupported_method",
    )
