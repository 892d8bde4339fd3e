"""Interim 1xx answers (`102 Processing`, `103 Early Hints`) before a partner's answer: read
in a loop, however many one read holds, and bounded (gateway/outbound/connection.py)."""

from __future__ import annotations

import pytest

from gateway.outbound.connection import INTERIM_MOST
from gateway.outbound.sender import Sender
from gateway.outbound.verdict import Verdict
from tests.partner_double import plate_post as _post
from tests.partner_double import raw_partner, raw_sender

PROCESSING = b"HTTP/1.1 102 Processing\r\n\r\n"
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{"ok": 1}'


sender = raw_sender  # the fixture, under the name the tests take


async def test_as_many_interim_answers_as_accepted_in_one_read_keep_the_answer(
    sender: Sender,
) -> None:
    async with raw_partner(PROCESSING * INTERIM_MOST + OK) as url:
        outcome = await sender.send(_post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.json_body) == (200, None, {"ok": 1})


@pytest.mark.parametrize("parts", [1, 3], ids=["one-read", "three-reads"])
async def test_interim_answers_past_the_bound_are_an_invalid_answer_not_an_exception(
    sender: Sender, parts: int
) -> None:
    """1,500 `102 Processing` heads in one read (a long-running partner's keep-alives
    waiting in the socket while the event loop was busy) overflowed Python's recursion
    limit in the answer reader: the `RecursionError` escaped the sender, a proxy call was a
    500 and a delivery the partner answered 200 was parked. Past the bound, counted over
    every read of the answer, it is refused like any malformed answer (a retry, no status)."""
    storm = PROCESSING * 1500
    size = len(storm) // parts + 1
    reply = [storm[at : at + size] for at in range(0, len(storm), size)]
    reply[-1] += OK
    async with raw_partner(reply) as url:
        outcome = await sender.send(_post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (
        None,
        "invalid_response",
        Verdict.RETRY,
    )
    assert outcome.message == f"invalid HTTP answer: more than {INTERIM_MOST} interim (1xx) answers"


ODD_OK = (
    b"HTTP/1.1 200 OK\r\nServer : tiny/1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 9\r\n\r\n{"ok": 1}'
)


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 102 Processing\r\nServer : tiny/1\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink : </a.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nServer : tiny/1\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>;\r\n rel=preload\r\n\r\n",
    ],
    ids=["102-space-before-colon", "103-space-before-colon", "100-space-before-colon", "fold"],
)
@pytest.mark.parametrize(
    "final", [[OK], [ODD_OK], [b"", OK]], ids=["final-plain", "final-odd", "final-later"]
)
async def test_an_interim_head_in_the_partners_own_style_keeps_the_answer(
    sender: Sender, interim: bytes, final: list[bytes]
) -> None:
    """A partner's stack writes its interim heads as its final one (whitespace before a
    colon, a fold): they are read as the final head is. The parser refused the interim head
    as it came, and the answer after it was lost (`invalid_response` without a status: a
    delivery the partner took sent again)."""
    reply = [interim + final[0], *final[1:]]
    async with raw_partner(reply) as url:
        outcome = await sender.send(_post(url), partner_id="erp")
    assert (outcome.status, outcome.error, outcome.verdict) == (200, None, Verdict.SUCCESS), (
        outcome.message
    )
    assert outcome.json_body == {"ok": 1}
