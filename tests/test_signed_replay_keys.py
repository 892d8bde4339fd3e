"""A signed message's replay key, through HTTP (docs/triggers.md "Authentication modes"): a
copy of a message is answered from the first call however its signatures are offered
(reordered, a junk one first, upper-case hex, another secret of a rotation, blanks, a query
string beside it), because the key is what the signature covers (a Standard Webhooks
`webhook-id`, a scheme's signed id, else the signed timestamp and body), never the first
signature offered. A `webhook-id` is any the standard allows, and answers about it name it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pymongo import AsyncMongoClient

from gateway.auth import webhook_signature as sw
from gateway.store.idempotency import record_id
from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import VEHICLE, Client, create_trigger, entities

BODY = orjson.dumps(VEHICLE)
SECRET = "partner-secret"
PAIRS = {
    "mode": "hmac",
    "algorithm": "sha256",
    "header": "X-Partner-Signature",
    "signature_field": "v1",
    "secret": SECRET,
}
TIMESTAMPED = {**PAIRS, "timestamp_field": "t", "signed_content": "{timestamp}.{body}"}
JSON = {"Content-Type": "application/json"}
NEW = "partner-next-secret"  # a partner's next secret, not given to the gateway yet
EARLIER = {"id": "kept", "key": "ABC1D23", "created": True, "changed": [], "events": []}


def _mac(secret: str, content: bytes) -> str:
    return hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()


async def _post(
    client: Client, trigger: dict[str, Any], headers: Any, body: bytes = BODY, query: str = ""
) -> tuple[int, dict[str, str], Any]:
    response = await client.post(f"/hooks/{trigger['id']}{query}", data=body, headers=headers)
    return response.status, dict(response.headers), await response.json()


async def _set_year(client: Client, year: int) -> None:
    """An admin's change after the first write: a copy written again would undo it."""
    response = await client.patch(
        "/api/v1/entities/vehicle/ABC1D23", json={"year": year}, headers=auth()
    )
    assert response.status == 200, await response.text()


async def _vehicle(client: Client) -> dict[str, Any]:
    """The one vehicle: its `year` and `version` (one more for every write)."""
    [vehicle] = await entities(client)
    return vehicle


async def _replayed_rejections(client: Client, trigger: dict[str, Any]) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if (
            line.startswith("gateway_trigger_signature_rejections_total{")
            and trigger["id"] in line
            and 'reason="replayed"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_copy_of_a_pairs_message_gets_the_first_answer_however_its_signatures_are_offered(
    client: Client,
) -> None:
    trigger = await create_trigger(client, auth=TIMESTAMPED)
    stamp = str(int(time.time()))
    good = _mac(SECRET, stamp.encode() + b"." + BODY)
    first = await _post(client, trigger, {**JSON, "X-Partner-Signature": f"t={stamp},v1={good}"})
    assert first[0] == 201, first
    await _set_year(client, 2024)
    written = await _vehicle(client)
    junk, other = "00" * 32, "ab" * 32
    for header in (
        f"t={stamp},v1={junk},v1={good}",  # a junk signature first
        f"t={stamp},v1={other},v1={junk},v1={good}",  # every new junk value
        f"v1={good},t={stamp}",  # the pairs reordered
        f"t={stamp},v1={good.upper()}",  # upper-case hex
        f" t={stamp} ; v1={junk} ;v1={good} ",  # blanks and semicolons
    ):
        copy = await _post(client, trigger, {**JSON, "X-Partner-Signature": header})
        assert copy[0] == 201 and copy[1].get("Idempotent-Replayed") == "true", (header, copy)
        assert copy[2] == first[2]
    # A second signature header is not read (the first counts), nor is the unsigned URL.
    repeated = [
        ("Content-Type", "application/json"),
        ("X-Partner-Signature", f"t={stamp},v1={junk},v1={good}"),
        ("X-Partner-Signature", f"t={stamp},v1={other}"),
    ]
    for headers, query in (
        (repeated, ""),
        ({**JSON, "X-Partner-Signature": f"t={stamp},v1={good}"}, "?x=1"),
    ):
        copy = await _post(client, trigger, headers, query=query)
        assert copy[0] == 201 and copy[1].get("Idempotent-Replayed") == "true", copy
    assert await _vehicle(client) == written


async def test_a_copy_of_an_untimestamped_message_with_a_junk_signature_first_stays_refused(
    client: Client,
) -> None:
    """Past its first answer's 24 h, a copy of a message signed without a timestamp is a 401
    `replayed` for 30 days: with a junk signature put first, too, however many times."""
    trigger = await create_trigger(client, auth=PAIRS)
    good = _mac(SECRET, BODY)
    first = await _post(client, trigger, {**JSON, "X-Partner-Signature": f"v1={good}"})
    assert first[0] == 201, first
    await client.app[services_key].store.db["idempotency"].delete_many({})  # 24 h are over
    await _set_year(client, 2024)
    written = await _vehicle(client)
    for n in range(1, 4):
        junk = f"{n:02x}" * 32
        for header in (f"v1={junk},v1={good}", f"v1={good.upper()},v1={junk}"):
            copy = await _post(client, trigger, {**JSON, "X-Partner-Signature": header})
            assert copy[0] == 401, (header, copy)
    assert await _replayed_rejections(client, trigger) == 6
    assert await _vehicle(client) == written


async def test_a_partner_retrying_during_a_secret_rotation_gets_the_first_answer(
    client: Client,
) -> None:
    """While both secrets are valid, a retry signed in another order, or with one secret
    only (either), is the same message: answered from the first call, written once."""
    trigger = await create_trigger(client, auth=TIMESTAMPED)
    github = await create_trigger(
        client, name="github", auth={"mode": "hmac", "preset": "github", "secret": SECRET}
    )
    new = "the partner's next secret"
    for each in (trigger, github):
        rotate = f"/api/v1/triggers/{each['id']}/rotate"
        rotated = await client.post(
            rotate, json={"secret": new, "grace_seconds": 600}, headers=auth()
        )
        assert rotated.status == 200, await rotated.text()
    stamp = str(int(time.time()))
    old_mac, new_mac = (_mac(s, stamp.encode() + b"." + BODY) for s in (SECRET, new))
    first = await _post(
        client, trigger, {**JSON, "X-Partner-Signature": f"t={stamp},v1={old_mac},v1={new_mac}"}
    )
    assert first[0] == 201, first
    await _set_year(client, 2024)
    written = await _vehicle(client)
    for header in (
        f"t={stamp},v1={new_mac},v1={old_mac}",
        f"t={stamp},v1={new_mac}",
        f"t={stamp},v1={old_mac}",
    ):
        retry = await _post(client, trigger, {**JSON, "X-Partner-Signature": header})
        assert retry[0] == 201 and retry[1].get("Idempotent-Replayed") == "true", (header, retry)
        assert retry[2] == first[2]
    body = orjson.dumps({**VEHICLE, "year": 2030})
    sent = await _post(
        client, github, {**JSON, "X-Hub-Signature-256": f"sha256={_mac(SECRET, body)}"}, body
    )
    assert sent[0] == 200, sent
    await _set_year(client, 2024)
    retry = await _post(
        client, github, {**JSON, "X-Hub-Signature-256": f"sha256={_mac(new, body)}"}, body
    )
    assert retry[0] == 200 and retry[1].get("Idempotent-Replayed") == "true", retry
    vehicle = await _vehicle(client)
    assert vehicle["year"] == 2024
    assert vehicle["version"] == written["version"] + 2  # the GitHub write and the admin's


def _webhook(
    secrets: list[str], msg_id: str, body: bytes = BODY, at: int | None = None
) -> dict[str, str]:
    at = int(time.time()) if at is None else at
    return {**JSON, **sw.signed_headers(secrets, msg_id, at, body)}


async def test_a_standard_webhooks_copy_gets_the_first_answer_however_its_signatures_are_offered(
    client: Client,
) -> None:
    trigger = await create_trigger(client, auth={"mode": "webhook_signature"})
    secret = trigger["secret"]
    first = await _post(client, trigger, _webhook([secret], "msg_1"))
    assert first[0] == 201, first
    await _set_year(client, 2024)
    written = await _vehicle(client)
    at = int(time.time())  # one timestamp for the signature and its header
    good = sw.sign(secret, "msg_1", at, BODY)
    junk = "v1," + base64.b64encode(b"\0" * 32).decode()
    for signatures, query in (
        (f"{junk} {good}", ""),
        (f"v2,abc {good} {junk}", ""),
        (f"   {good}   ", ""),
        (good, "?replay=1"),  # the URL is not signed
    ):
        headers = {**_webhook([secret], "msg_1", at=at), "webhook-signature": signatures}
        copy = await _post(client, trigger, headers, query=query)
        assert copy[0] == 201 and copy[1].get("Idempotent-Replayed") == "true", (signatures, copy)
        assert copy[2] == first[2]
    assert await _vehicle(client) == written


async def test_any_webhook_id_the_standard_allows_is_taken_and_keys_its_copies(
    client: Client,
) -> None:
    """The Standard Webhooks specification sets no length or alphabet for `webhook-id`: a
    long one, or one with non-ASCII letters, is a message like any other (stored by its
    digest), and its copy gets the first answer."""
    trigger = await create_trigger(client, auth={"mode": "webhook_signature"})
    secret = trigger["secret"]
    for n, msg_id in enumerate(("m" * 300, "msg_\u00e9t\u00e9", "evt 1/" * 1000)):
        body = orjson.dumps({**VEHICLE, "year": 2000 + n})
        first = await _post(client, trigger, _webhook([secret], msg_id, body), body)
        assert first[0] in (200, 201) and "Idempotent-Replayed" not in first[1], first
        copy = await _post(client, trigger, _webhook([secret], msg_id, body), body)
        assert copy[1].get("Idempotent-Replayed") == "true" and copy[2] == first[2], copy
    [vehicle] = await entities(client)
    assert vehicle["year"] == 2002


async def _raw_post(client: Client, path: str, head: list[bytes], body: bytes) -> int:
    """A request whose header bytes are sent as they are (not UTF-8), as some senders do."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    lines = [
        f"POST {path} HTTP/1.1".encode(),
        b"Host: x",
        b"Connection: close",
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        *head,
    ]
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def test_a_webhook_id_or_signature_in_bytes_that_are_not_utf8_is_verified_not_a_500(
    client: Client,
) -> None:
    trigger = await create_trigger(client, auth={"mode": "webhook_signature"})
    key = sw.secret_key(trigger["secret"])
    msg_id = b"msg_\xe9t\xe9"  # Latin-1
    stamp = str(int(time.time())).encode()
    mac = hmac.digest(key, msg_id + b"." + stamp + b"." + BODY, "sha256")
    signed = [b"webhook-id: " + msg_id, b"webhook-timestamp: " + stamp]
    good = b"webhook-signature: v1," + base64.b64encode(mac)
    path = f"/hooks/{trigger['id']}"
    assert await _raw_post(client, path, [*signed, good], BODY) == 201
    assert await _raw_post(client, path, [*signed, good], BODY) == 201  # its first answer
    junk = b"webhook-signature: v1,\xff\xfe " + good.split(b": ", 1)[1]
    assert await _raw_post(client, path, [*signed, junk], BODY) == 201
    assert await _raw_post(client, path, [*signed, b"webhook-signature: v1,\xff"], BODY) == 401
    assert len(await entities(client)) == 1


async def test_answers_about_a_webhook_id_name_the_webhook_id_not_an_idempotency_key(
    client: Client, mongodb_uri: str
) -> None:
    trigger = await create_trigger(client, auth={"mode": "webhook_signature"})
    secret = trigger["secret"]
    assert (await _post(client, trigger, _webhook([secret], "msg_1")))[0] == 201
    other = orjson.dumps({**VEHICLE, "year": 2030})
    status, _, problem = await _post(client, trigger, _webhook([secret], "msg_1", other), other)
    assert status == 422, problem
    assert "webhook-id" in problem["detail"] and "Idempotency-Key" not in str(problem)

    # Two copies at once: the first one's writes are held on the server until the second
    # is answered.
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, appname="faults")
    markers = admin[client.app[services_key].settings.database]["idempotency"]
    try:
        await admin.admin.command(
            "configureFailPoint",
            "failCommand",
            mode="alwaysOn",
            data={
                "failCommands": ["update", "findAndModify"],
                "appName": "rabbot-gateway",
                "blockConnection": True,
                "blockTimeMS": 1500,
            },
        )
        headers = _webhook([secret], "msg_2")
        first = asyncio.create_task(_post(client, trigger, headers))
        async with asyncio.timeout(10):
            while await markers.count_documents({"state": "pending"}) == 0:
                await asyncio.sleep(0.01)
        status, _, problem = await _post(client, trigger, headers)
        assert status == 409, problem
        assert "webhook-id" in problem["detail"] and "Idempotency-Key" not in str(problem)
    finally:
        await admin.admin.command("configureFailPoint", "failCommand", mode="off")
        await admin.close()
    assert (await first)[0] == 200


async def test_a_copy_of_a_message_kept_under_the_earlier_key_is_still_recognised(
    client: Client,
) -> None:
    """Until 2026-12-05 an hmac message was kept under `sig:<timestamp>:<signature hex>`: a
    copy of one written before the upgrade gets its first answer (within 24 h) or is refused
    as `replayed` (within 30 days), not written again."""
    db = client.app[services_key].store.db
    stamp = str(int(time.time()))
    timestamped = await create_trigger(client, auth=TIMESTAMPED)
    good = _mac(SECRET, stamp.encode() + b"." + BODY)
    earlier = {"id": "kept", "key": "ABC1D23", "created": True, "changed": [], "events": []}
    now = datetime.now(UTC)
    await db["idempotency"].insert_one(
        {
            "_id": record_id(timestamped["id"], f"sig:{stamp}:{good}"),
            "tenant": "acme",
            "trigger_id": timestamped["id"],
            "body_hash": hashlib.sha256(BODY + b"\n").hexdigest(),
            "state": "done",
            "status": 201,
            "body": orjson.dumps(earlier),
            "created_at": now,
            "lease_until": now,
            "claim": "earlier",
        }
    )
    copy = await _post(client, timestamped, {**JSON, "X-Partner-Signature": f"t={stamp},v1={good}"})
    assert copy[0] == 201 and copy[1].get("Idempotent-Replayed") == "true", copy
    assert copy[2] == earlier
    again = await _post(
        client, timestamped, {**JSON, "X-Partner-Signature": f"t={stamp},v1={good}"}
    )
    assert again[2] == earlier

    untimestamped = await create_trigger(client, name="plain", auth=PAIRS)
    plain = _mac(SECRET, BODY)
    await db["signature_memory"].insert_one(
        {
            "_id": record_id(untimestamped["id"], f"sig::{plain}"),
            "tenant": "acme",
            "trigger_id": untimestamped["id"],
            "seen_at": now,
        }
    )
    refused = await _post(client, untimestamped, {**JSON, "X-Partner-Signature": f"v1={plain}"})
    assert refused[0] == 401, refused
    assert await _replayed_rejections(client, untimestamped) == 1
    assert await entities(client) == []


WITH_ID = {
    "mode": "hmac",
    "algorithm": "sha256",
    "header": "X-Sig",
    "id_header": "X-Id",
    "timestamp_header": "X-Ts",
    "signed_content": "{id}.{timestamp}.{body}",
    "secret": SECRET,
}


def _id_signed(msg_id: str, stamp: str, body: bytes = BODY) -> dict[str, str]:
    signature = _mac(SECRET, f"{msg_id}.{stamp}.".encode() + body)
    return {**JSON, "X-Sig": signature, "X-Id": msg_id, "X-Ts": stamp}


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def _earlier_record(client: Client, trigger_id: str, key: str, body_hash: str) -> None:
    """An idempotency record as the version before 2026-12-05 kept it: answered `EARLIER`."""
    now = datetime.now(UTC)
    await (
        client.app[services_key]
        .store.db["idempotency"]
        .insert_one(
            {
                "_id": record_id(trigger_id, key),
                "tenant": "acme",
                "trigger_id": trigger_id,
                "body_hash": body_hash,
                "state": "done",
                "status": 201,
                "body": orjson.dumps(EARLIER),
                "created_at": now,
                "lease_until": now,
                "claim": "earlier",
            }
        )
    )


async def _remembered(client: Client, trigger: dict[str, Any]) -> int:
    memory = client.app[services_key].store.db["signature_memory"]
    return await memory.count_documents({"trigger_id": trigger["id"]})


async def _age_records(client: Client, seconds: int) -> None:
    """Every idempotency record `seconds` older (reads ignore those past 24 h)."""
    records = client.app[services_key].store.db["idempotency"]
    async for record in records.find({}, {"created_at": 1}):
        older = record["created_at"] - timedelta(seconds=seconds)
        await records.update_one({"_id": record["_id"]}, {"$set": {"created_at": older}})


async def test_a_copy_kept_under_an_unmatched_first_signature_before_the_upgrade_is_answered(
    client: Client,
) -> None:
    """Until 2026-12-05 a message was kept under the first signature offered, also when that
    one matched no secret: a partner rolling its secret sends the new one first, before the
    gateway has it. A copy of such a message gets its first answer. That key says nothing of
    the content: another message offering the same signature first (as only someone replaying
    it would) is not answered from it, but written."""
    trigger = await create_trigger(client, auth=TIMESTAMPED)
    stamp = str(int(time.time()))
    content = stamp.encode() + b"." + BODY
    first = _mac(NEW, content)
    await _earlier_record(client, trigger["id"], f"sig:{stamp}:{first}", _digest(BODY + b"\n"))
    header = f"t={stamp},v1={first},v1={_mac(SECRET, content)}"
    copy = await _post(client, trigger, {**JSON, "X-Partner-Signature": header})
    assert copy[0] == 201 and copy[1].get("Idempotent-Replayed") == "true", copy
    assert copy[2] == EARLIER
    assert await entities(client) == []

    other = orjson.dumps({**VEHICLE, "year": 2030})
    header = f"t={stamp},v1={first},v1={_mac(SECRET, stamp.encode() + b'.' + other)}"
    written = await _post(client, trigger, {**JSON, "X-Partner-Signature": header}, other)
    assert written[0] == 201 and "Idempotent-Replayed" not in written[1], written
    assert (await _vehicle(client))["year"] == 2030


async def test_a_copy_remembered_before_the_upgrade_under_an_unmatched_first_signature_is_refused(
    client: Client,
) -> None:
    """A scheme without a timestamp: a message written two days before the upgrade, kept in
    the 30-day memory under its first signature (the partner's next secret's), is refused as
    `replayed` when a copy comes, not written again."""
    trigger = await create_trigger(client, auth=PAIRS)
    first = _mac(NEW, BODY)
    await (
        client.app[services_key]
        .store.db["signature_memory"]
        .insert_one(
            {
                "_id": record_id(trigger["id"], f"sig::{first}"),
                "tenant": "acme",
                "trigger_id": trigger["id"],
                "seen_at": datetime.now(UTC) - timedelta(days=2),
            }
        )
    )
    header = f"v1={first},v1={_mac(SECRET, BODY)}"
    copy = await _post(client, trigger, {**JSON, "X-Partner-Signature": header})
    assert copy[0] == 401, copy
    assert await _replayed_rejections(client, trigger) == 1
    assert await entities(client) == []


async def test_a_retry_with_a_query_of_a_message_answered_before_the_upgrade_is_answered(
    client: Client,
) -> None:
    """Until 2026-12-05 a signed message's record held the digest of its body and query
    string; now of its body alone. A retry to the same URL (`?source=fleet`) of a message
    answered before gets that answer, with Standard Webhooks and with an `id_header` scheme;
    another body under the same id is still a 422."""
    webhook = await create_trigger(client, auth={"mode": "webhook_signature"})
    with_id = await create_trigger(client, name="with-id", auth=WITH_ID)

    def id_signed(body: bytes) -> dict[str, str]:
        return _id_signed("evt_1", str(int(time.time())), body)

    other = orjson.dumps({**VEHICLE, "year": 2030})
    for trigger, key, signed, named in (
        (webhook, "msg_1", lambda body: _webhook([webhook["secret"]], "msg_1", body), "webhook-id"),
        (with_id, "id:evt_1", id_signed, "X-Id"),
    ):
        await _earlier_record(client, trigger["id"], key, _digest(BODY + b"\nsource=fleet"))
        retry = await _post(client, trigger, signed(BODY), query="?source=fleet")
        assert retry[0] == 201 and retry[1].get("Idempotent-Replayed") == "true", retry
        assert retry[2] == EARLIER
        status, _, problem = await _post(client, trigger, signed(other), other, "?source=fleet")
        assert status == 422 and named in problem["detail"], problem
    assert await entities(client) == []


async def test_an_identical_message_through_a_scheme_without_timestamp_is_taken_for_a_copy(
    client: Client,
) -> None:
    """docs/triggers.md "Identical messages": a scheme that signs the body alone (the github,
    motive and fleetio presets) cannot tell a partner's later message with the same bytes
    (its state going A, B, A) from a copy. Within 24 h it gets the first answer, marked
    `Idempotent-Replayed`, and nothing is written; past that, for 30 days, a 401 counted as
    `replayed`. With a signed timestamp, the same body sent again is a new message."""
    github = await create_trigger(
        client, name="github", auth={"mode": "hmac", "preset": "github", "secret": SECRET}
    )
    a, b = (orjson.dumps({**VEHICLE, "year": year}) for year in (2022, 2023))

    async def sent(body: bytes) -> tuple[int, dict[str, str], Any]:
        signature = {**JSON, "X-Hub-Signature-256": "sha256=" + _mac(SECRET, body)}
        return await _post(client, github, signature, body)

    first = await sent(a)
    assert first[0] == 201, first
    assert (await sent(b))[0] == 200
    again = await sent(a)
    assert again[0] == 201 and again[1].get("Idempotent-Replayed") == "true", again
    assert again[2] == first[2]
    assert (await _vehicle(client))["year"] == 2023  # A's return is not written
    await _age_records(client, 24 * 3600 + 1)
    later = await sent(a)
    assert later[0] == 401, later
    assert await _replayed_rejections(client, github) == 1
    assert (await _vehicle(client))["year"] == 2023

    timestamped = await create_trigger(client, name="timestamped", auth=TIMESTAMPED)
    now = int(time.time())
    for n, body in enumerate((a, b, a)):
        stamp = str(now - 2 + n)
        header = f"t={stamp},v1={_mac(SECRET, stamp.encode() + b'.' + body)}"
        written = await _post(client, timestamped, {**JSON, "X-Partner-Signature": header}, body)
        assert written[0] == 200 and "Idempotent-Replayed" not in written[1], written
    assert (await _vehicle(client))["year"] == 2022


async def test_a_message_timestamped_ahead_of_the_clock_is_refused_while_its_copy_verifies(
    client: Client,
) -> None:
    """A timestamp is taken within the tolerance on either side of the clock, so with a
    tolerance over 12 h a copy of a message stamped ahead verifies after its 24 h record has
    gone: such a message is remembered, and that copy is a 401 `replayed`, not written again.
    One whose copies stop verifying before its record goes is not remembered, nor is any
    message of a scheme whose tolerance is shorter than 12 h."""
    trigger = await create_trigger(client, auth={**TIMESTAMPED, "tolerance_seconds": 86400})
    short = await create_trigger(client, name="short", auth=TIMESTAMPED)

    def signed(stamp: str, body: bytes = BODY) -> dict[str, str]:
        return {
            **JSON,
            "X-Partner-Signature": f"t={stamp},v1={_mac(SECRET, stamp.encode() + b'.' + body)}",
        }

    ahead = signed(str(int(time.time()) + 3600))  # the partner's clock 1 h ahead
    first = await _post(client, trigger, ahead)
    assert first[0] == 201, first
    await _age_records(client, 24 * 3600 + 1)  # its copy's timestamp is 23 h old: it verifies
    await _set_year(client, 2024)
    copy = await _post(client, trigger, ahead)
    assert copy[0] == 401, copy
    assert await _replayed_rejections(client, trigger) == 1
    assert (await _vehicle(client))["year"] == 2024

    behind = orjson.dumps({**VEHICLE, "year": 2030})
    stamp = str(int(time.time()) - 3600)  # its copies verify 23 h more: within its record
    assert (await _post(client, trigger, signed(stamp, behind), behind))[0] == 200
    assert (await _post(client, short, signed(str(int(time.time()) + 200))))[0] == 200
    assert await _remembered(client, trigger) == 1
    assert await _remembered(client, short) == 0

    # The same with a signed message id.
    long_id = await create_trigger(
        client, name="long-id", auth={**WITH_ID, "tolerance_seconds": 86400}
    )
    short_id = await create_trigger(client, name="short-id", auth=WITH_ID)
    ahead_id = _id_signed("evt_1", str(int(time.time()) + 3600))
    assert (await _post(client, long_id, ahead_id))[0] == 200
    assert (await _post(client, short_id, _id_signed("evt_2", str(int(time.time()) + 200))))[
        0
    ] == 200
    await _age_records(client, 24 * 3600 + 1)
    await _set_year(client, 2025)
    assert (await _post(client, long_id, ahead_id))[0] == 401
    assert (await _vehicle(client))["year"] == 2025
    assert await _remembered(client, short_id) == 0
