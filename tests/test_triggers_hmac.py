"""hmac triggers through HTTP: a partner's own signature scheme, with a secret we issue (shown
once) or the partner's (write-only, sealed at rest); bad signatures get the same 401 as any
bad credential and are counted by reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from gateway.clock import utcnow
from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import (
    VEHICLE,
    Client,
    create_position_trigger,
    create_trigger,
    entities,
    stored_with_get,
    upload_shipped,
)

BODY = orjson.dumps(VEHICLE)
SAMSARA_SECRET = base64.b64encode(b"secret key the partner gave").decode()


def _samsara(secret: str, body: bytes = BODY, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    message = b"v1:" + str(stamp).encode() + b":" + body
    mac = hmac.new(base64.b64decode(secret), message, hashlib.sha256).hexdigest()
    return {"X-Samsara-Signature": f"v1={mac}", "X-Samsara-Timestamp": str(stamp)}


def _motive(secret: str, body: bytes = BODY) -> dict[str, str]:
    return {"X-KT-Webhook-Signature": hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()}


async def _post(
    client: Client, trigger: dict[str, Any], headers: dict[str, str], body: bytes = BODY
) -> Any:
    return await client.post(
        f"/hooks/{trigger['id']}",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
    )


async def _rejections(client: Client, trigger: dict[str, Any]) -> dict[str, float]:
    """gateway_trigger_signature_rejections_total of one trigger, by reason."""
    text = await (await client.get("/metrics")).text()
    counts = {}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name == "gateway_trigger_signature_rejections_total" and trigger["id"] in rest:
            reason = rest.split('reason="')[1].split('"')[0]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    return counts


async def test_a_partners_secret_is_write_only_and_sealed(client: Client) -> None:
    trigger = await create_trigger(
        client, auth={"mode": "hmac", "preset": "samsara", "secret": SAMSARA_SECRET}
    )
    assert "secret" not in trigger and "token" not in trigger
    assert trigger["auth"] == {"mode": "hmac", "preset": "samsara"}
    assert trigger["credentials"][0]["source"] == "partner"
    shown = await (await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())).text()
    stored = await client.app[services_key].store.db["triggers"].find_one({"_id": trigger["id"]})
    for text in (shown, orjson.dumps(stored, default=str).decode()):
        assert SAMSARA_SECRET not in text
    response = await _post(client, trigger, _samsara(SAMSARA_SECRET))
    assert response.status == 201, await response.text()
    assert [v["plate"] for v in await entities(client)] == ["ABC1D23"]


async def test_a_secret_we_issue_is_shown_once_and_signs(client: Client) -> None:
    trigger = await create_trigger(client, auth={"mode": "hmac", "preset": "motive"})
    secret = trigger["secret"]
    assert len(bytes.fromhex(secret)) == 32
    assert trigger["credentials"][0]["source"] == "gateway"
    shown = await (await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())).text()
    assert secret not in shown
    assert (await _post(client, trigger, _motive(secret))).status == 201


async def test_bad_signatures_get_the_same_401_and_are_counted_by_reason(client: Client) -> None:
    trigger = await create_trigger(
        client, auth={"mode": "hmac", "preset": "samsara", "secret": SAMSARA_SECRET}
    )
    plain = await create_trigger(client, name="plain")
    bad_token = await client.post(
        f"/hooks/{plain['id']}", json=VEHICLE, headers={"Authorization": "Bearer nope"}
    )
    expected = (await bad_token.json())["detail"]
    now = int(time.time())
    good = _samsara(SAMSARA_SECRET, stamp=now)
    attempts = {
        "missing": {},
        "malformed": {**good, "X-Samsara-Signature": good["X-Samsara-Signature"][:-4]},
        "stale": _samsara(SAMSARA_SECRET, stamp=now - 3600),
        "mismatch": _samsara(base64.b64encode(b"someone else").decode(), stamp=now),
    }
    for headers in attempts.values():
        response = await _post(client, trigger, headers)
        assert response.status == 401
        assert "WWW-Authenticate" in response.headers
        assert (await response.json())["detail"] == expected
    tampered = await _post(client, trigger, good, BODY.replace(b"Fiat", b"Ford"))
    assert tampered.status == 401
    assert await _rejections(client, trigger) == {
        "missing": 1,
        "malformed": 1,
        "stale": 1,
        "mismatch": 2,
    }
    assert await entities(client) == []


async def test_a_replayed_request_gets_the_first_answer_not_a_second_write(client: Client) -> None:
    trigger = await create_trigger(client, auth={"mode": "hmac", "preset": "motive"})
    headers = _motive(trigger["secret"])
    first = await _post(client, trigger, headers)
    assert first.status == 201
    again = await _post(client, trigger, {**headers, "Idempotency-Key": "attacker-chosen"})
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()


async def test_partner_secrets_rotate_with_a_grace_period_and_are_revoked(client: Client) -> None:
    trigger = await create_trigger(
        client, auth={"mode": "hmac", "preset": "samsara", "secret": SAMSARA_SECRET}
    )
    new = base64.b64encode(b"the partner's next key").decode()
    rotate = f"/api/v1/triggers/{trigger['id']}/rotate"
    refused = await client.post(rotate, json={"secret": "not base64!"}, headers=auth())
    assert refused.status == 422
    assert (await refused.json())["errors"][0]["pointer"] == "/secret"
    rotated = await client.post(rotate, json={"secret": new, "grace_seconds": 600}, headers=auth())
    assert rotated.status == 200 and "secret" not in await rotated.json()
    vehicle = orjson.dumps({**VEHICLE, "year": 2023})
    assert (await _post(client, trigger, _samsara(SAMSARA_SECRET))).status == 201
    assert (await _post(client, trigger, _samsara(new, vehicle), vehicle)).status == 200
    await client.post(f"/api/v1/triggers/{trigger['id']}/revoke", headers=auth())
    assert (await _post(client, trigger, _samsara(new, vehicle), vehicle)).status == 401


async def test_a_patched_secret_replaces_the_old_one(client: Client) -> None:
    trigger = await create_trigger(client, auth={"mode": "hmac", "preset": "motive"})
    old = trigger["secret"]
    patched = await client.patch(
        f"/api/v1/triggers/{trigger['id']}",
        json={"auth": {"mode": "hmac", "preset": "motive", "secret": "the partner's own"}},
        headers=auth(),
    )
    assert patched.status == 200, await patched.text()
    assert "the partner's own" not in await patched.text()
    assert (await _post(client, trigger, _motive(old))).status == 401
    assert (await _post(client, trigger, _motive("the partner's own"))).status == 201


async def test_schemes_that_cannot_work_are_refused_on_save(client: Client) -> None:
    cases = [
        ("/auth/secret", {"mode": "hmac", "preset": "samsara", "secret": "not base64!"}),
        ("/auth/secret", {"mode": "hmac", "preset": "motive", "secret": "not base64!" * 100}),
        ("/auth/secret", {"mode": "hmac", "preset": "motive", "secret": 12345}),
        ("/auth/header", {"mode": "hmac", "algorithm": "sha256"}),
        ("/auth/preset", {"mode": "hmac"}),  # no scheme at all: choose one
        (
            "/auth/signed_content",
            {
                "mode": "hmac",
                "algorithm": "sha256",
                "header": "X-Sig",
                "signed_content": "{timestamp}",
                "timestamp_header": "X-Ts",
            },
        ),
        ("/auth/algorithm", {"mode": "hmac", "algorithm": "md5", "header": "X-Sig"}),
    ]
    for pointer, spec in cases:
        response = await client.post(
            "/api/v1/triggers",
            json={"name": "x", "entity_type": "vehicle", "auth": spec},
            headers=auth(),
        )
        assert response.status == 422, pointer
        text = await response.text()
        pointers = [e["pointer"] for e in orjson.loads(text)["errors"]]
        assert pointer in pointers, (pointer, pointers)
        assert "not base64!" not in text and "12345" not in text  # a secret is never quoted


def _box(secret: str, stamp: str, body: bytes = BODY) -> dict[str, str]:
    # Box: base64 HMAC-SHA256 of the body's bytes, then BOX-DELIVERY-TIMESTAMP's (ISO 8601).
    mac = hmac.new(secret.encode(), body + stamp.encode(), hashlib.sha256).digest()
    return {
        "BOX-SIGNATURE-PRIMARY": base64.b64encode(mac).decode(),
        "BOX-DELIVERY-TIMESTAMP": stamp,
    }


async def test_an_iso_8601_timestamp_header_is_checked_against_the_tolerance(
    client: Client,
) -> None:
    box = {
        "mode": "hmac",
        "algorithm": "sha256",
        "header": "BOX-SIGNATURE-PRIMARY",
        "encoding": "base64",
        "signed_content": "{body}{timestamp}",
        "timestamp_header": "BOX-DELIVERY-TIMESTAMP",
        "tolerance_seconds": 600,
        "secret": "box primary key",
    }
    trigger = await create_trigger(client, auth=box)
    brt = timezone(timedelta(hours=-3))
    fresh = datetime.now(brt).replace(microsecond=0).isoformat()
    response = await _post(client, trigger, _box("box primary key", fresh))
    assert response.status == 201, await response.text()
    old = (datetime.now(UTC) - timedelta(minutes=11)).isoformat().replace("+00:00", "Z")
    naive = datetime.now(UTC).replace(tzinfo=None).isoformat()
    for stamp in (old, naive, "yesterday"):
        response = await _post(client, trigger, _box("box primary key", stamp))
        assert response.status == 401, stamp
    assert await _rejections(client, trigger) == {"stale": 1.0, "malformed": 2.0}


async def test_a_signed_form_trigger_refuses_fields_in_the_unsigned_query_string(
    client: Client,
) -> None:
    """A form trigger reads the query string's fields too, but no scheme signs the URL: with
    a captured signature (of any body, or of the empty body of a GET), a caller wrote fields
    of its choosing (`?status=inactive` beside the signed body; a whole vehicle in a GET's
    query) once the first answer's record had expired, or the first time."""
    trigger = await create_trigger(
        client, format="form", auth={"mode": "hmac", "preset": "motive", "secret": "partner-s3cr3t"}
    )
    await stored_with_get(client, trigger)  # as before GET was refused to a signed trigger
    body = b"plate=ABC1D23&status=active"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for url, method, sent in (
        (f"/hooks/{trigger['id']}?status=inactive", "POST", body),
        (f"/hooks/{trigger['id']}?plate=ABC1D23&status=inactive", "GET", b""),
        (f"/hooks/{trigger['id']}?plate=ABC1D23&status=inactive", "POST", b""),
    ):
        response = await client.request(
            method, url, data=sent, headers={**form, **_motive("partner-s3cr3t", sent)}
        )
        assert response.status == 400, (method, url, await response.text())
        problem = await response.json()
        assert "query string" in problem["detail"] and "signed" in problem["detail"], problem
    assert await entities(client) == []
    response = await client.post(
        f"/hooks/{trigger['id']}", data=body, headers={**form, **_motive("partner-s3cr3t", body)}
    )
    assert response.status == 201, await response.text()
    [vehicle] = await entities(client)
    assert vehicle["status"] == "active"


async def test_a_copy_of_an_untimestamped_signed_message_is_refused_after_its_first_answer_expired(
    client: Client,
) -> None:
    """Motive, Fleetio and GitHub sign the body alone: a copy verifies forever. It was only
    recognised while its idempotency record lived (24 h); after that, a captured message was
    written again (events emitted again). Its key is now remembered 30 days: a copy is a 401,
    counted as `replayed`, nothing written; past the memory it is processed afresh."""
    db = client.app[services_key].store.db
    trigger = await create_trigger(client, auth={"mode": "hmac", "preset": "motive"})
    headers = _motive(trigger["secret"])
    first = await _post(client, trigger, headers)
    assert first.status == 201, await first.text()
    events = await db["events"].count_documents({})
    await db["idempotency"].delete_many({})  # its 24 h are over (the TTL index's sweep)
    again = await _post(client, trigger, headers)
    assert again.status == 401, await again.text()
    assert await _rejections(client, trigger) == {"replayed": 1}
    assert await db["events"].count_documents({}) == events
    forty_days_ago = datetime.now(UTC) - timedelta(days=40)
    await db["signature_memory"].update_many({}, {"$set": {"seen_at": forty_days_ago}})
    late = await _post(client, trigger, headers)
    assert late.status == 200, await late.text()  # the memory is over too: processed afresh


async def test_a_step_of_the_servers_clock_forgets_no_signed_message_before_its_time(
    client: Client, gateway_time: Callable[[datetime], None]
) -> None:
    """The database server's clock steps 31 days forward (the next reading follows it) after
    a Motive message was written and its idempotency record is gone: the TTL expiry keeps its
    key in the signature memory (held back), and the read no longer takes it for expired on
    the stepped time: a copy is still refused, not written a second time."""
    store = client.app[services_key].store
    trigger = await create_trigger(client, auth={"mode": "hmac", "preset": "motive"})
    headers = _motive(trigger["secret"])
    now = utcnow()
    gateway_time(now)
    first = await _post(client, trigger, headers)
    assert first.status == 201, await first.text()
    await store.db["idempotency"].delete_many({})  # its 24 h are over
    await store.expiry.expire()  # a pass on the right time
    gateway_time(now + timedelta(days=31))
    assert await store.expiry.expire() == 0  # the memory kept

    again = await _post(client, trigger, headers)
    assert again.status == 401, await again.text()
    assert await _rejections(client, trigger) == {"replayed": 1}


async def test_timestamped_schemes_and_position_triggers_keep_no_signature_memory(
    client: Client,
) -> None:
    """A Samsara copy is stale after 5 minutes, and a fix sent again is a duplicate stored
    once: neither needs a record per message for 30 days."""
    db = client.app[services_key].store.db
    samsara = await create_trigger(
        client, auth={"mode": "hmac", "preset": "samsara", "secret": SAMSARA_SECRET}
    )
    assert (await _post(client, samsara, _samsara(SAMSARA_SECRET))).status == 201
    assert await db["signature_memory"].count_documents({}) == 0
    motive_positions = await client.post(
        "/api/v1/triggers",
        json={"name": "fixes", "target": "positions", "auth": {"mode": "hmac", "preset": "motive"}},
        headers=auth(),
    )
    assert motive_positions.status == 201, await motive_positions.text()
    positions = await motive_positions.json()
    fix = orjson.dumps({"plate": "ABC1D23", "time": "2026-12-01T12:00:00Z", "lat": 1, "lon": 2})
    stored = await _post(client, positions, _motive(positions["secret"], fix), fix)
    assert stored.status == 201, await stored.text()
    assert await db["signature_memory"].count_documents({}) == 0


async def test_a_signed_fix_stamped_at_its_receipt_is_refused_as_a_copy_after_its_first_answer(
    client: Client,
) -> None:
    """An OsmAnd form without `timestamp` is a fix at the time the gateway received it: a
    copy of its signed (Motive: no timestamp) message, sent once its 24 h record is gone, was
    a second fix "now" at the captured place. Such a fix's message is remembered as an entity
    message is: the copy is a 401 `replayed`, and the track keeps one fix."""
    db = client.app[services_key].store.db
    response = await client.post(
        "/api/v1/entities/vehicle",
        json={"plate": "ABC1D23", "attributes": {"tracker_id": "dev1"}},
        headers=auth(),
    )
    assert response.status == 201, await response.text()
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(
        client, mapping="osmand", format="form", auth={"mode": "hmac", "preset": "motive"}
    )
    stamped = b"id=dev1&lat=-23.56&lon=-46.65&speed=10"
    timed = b"id=dev1&lat=-23.55&lon=-46.64&timestamp=1764590400"

    async def send(body: bytes) -> Any:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        headers = {**form, **_motive(trigger["secret"], body)}
        return await client.post(f"/hooks/{trigger['id']}", data=body, headers=headers)

    for body in (stamped, timed):
        first = await send(body)
        assert first.status == 201, await first.text()
    assert await db["signature_memory"].count_documents({}) == 1  # the stamped one alone
    await db["idempotency"].delete_many({})  # their 24 h are over (the TTL index's sweep)
    again = await send(stamped)
    assert again.status == 401, await again.text()
    assert await _rejections(client, trigger) == {"replayed": 1}
    timed_again = await send(timed)
    assert timed_again.status == 200, await timed_again.text()  # a duplicate, stored once
    assert (await timed_again.json())["duplicate"] is True
    assert await db["positions"].count_documents({}) == 2


async def test_a_scheme_change_the_kept_secret_cannot_key_is_refused_at_the_changed_member(
    client: Client,
) -> None:
    """Creating fleetio with a text secret read as base64 is refused; so is a PATCH that
    makes the stored text secret be read as base64 (every message would be a `mismatch`)."""
    fleetio = {"mode": "hmac", "preset": "fleetio", "secret": "fleetio-doc-example-key"}
    trigger = await create_trigger(client, auth=fleetio)
    merge = {**auth(), "Content-Type": "application/merge-patch+json"}
    path = f"/api/v1/triggers/{trigger['id']}"
    for change, pointer in (
        (
            {"mode": "hmac", "preset": "fleetio", "secret_encoding": "base64"},
            "/auth/secret_encoding",
        ),
        ({"mode": "webhook_signature"}, "/auth/mode"),
    ):
        response = await client.patch(path, json={"auth": change}, headers=merge)
        assert response.status == 422, await response.text()
        errors = (await response.json())["errors"]
        assert [e["pointer"] for e in errors] == [pointer]
        assert "fleetio-doc-example-key" not in await response.text()
    # The change with a secret that fits it is saved, and the partner's messages verify.
    given = {"mode": "hmac", "preset": "fleetio", "secret_encoding": "base64"}
    key = base64.b64encode(b"fleetio key").decode()
    response = await client.patch(path, json={"auth": {**given, "secret": key}}, headers=merge)
    assert response.status == 200, await response.text()
    signature = hmac.new(b"fleetio key", BODY, hashlib.sha256).hexdigest()
    assert (await _post(client, trigger, {"X-Fleetio-Webhook-Signature": signature})).status == 201


async def test_a_scheme_change_whose_kept_secret_cannot_be_opened_is_a_422_naming_it(
    client: Client,
) -> None:
    """A change of the scheme checks the kept secret; one that cannot be opened (here
    damaged) cannot be checked: the change is refused at the member that changed, naming the
    trigger's stored secret, never a 500. A legacy text secret under base64 still takes a
    rename (nothing of the scheme changes)."""
    fleetio = {"mode": "hmac", "preset": "fleetio", "secret": "fleetio-doc-example-key"}
    trigger = await create_trigger(client, auth=fleetio)
    triggers = client.app[services_key].store.db["triggers"]
    await triggers.update_one(
        {"_id": trigger["id"]}, {"$set": {"auth.secrets.0.sealed": "gAAAAA-damaged"}}
    )
    merge = {**auth(), "Content-Type": "application/merge-patch+json"}
    path = f"/api/v1/triggers/{trigger['id']}"
    change = {"mode": "hmac", "preset": "fleetio", "secret_encoding": "base64"}
    response = await client.patch(path, json={"auth": change}, headers=merge)
    assert response.status == 422, await response.text()
    errors = (await response.json())["errors"]
    assert [e["pointer"] for e in errors] == ["/auth/secret_encoding"]
    assert "stored secret cannot be opened" in errors[0]["message"]
    legacy = await create_trigger(client, name="legacy", auth=fleetio)
    await triggers.update_one({"_id": legacy["id"]}, {"$set": {"auth.secret_encoding": "base64"}})
    response = await client.patch(
        f"/api/v1/triggers/{legacy['id']}", json={"name": "renamed"}, headers=merge
    )
    assert response.status == 200, await response.text()
