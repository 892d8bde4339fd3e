"""An action's answer rules: which partner answers are retried and which are final, told by
the status, a header and the parsed body, before SPEC §5's defaults (`verdict.classify`).

A rule is `{"status": [...], "body": <JMESPath>, "header": {"name", "value"}, "then":
"retry" | "fail"}`; the first rule that matches an answer decides. The body is the answer as
the sender read it once, capped and parsed (JSON, or an XML answer's tree): a rule reads
that tree, never the connection.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from gateway.errors import FieldProblem
from gateway.formats.headers import carries_credential
from gateway.formats.json_tree import is_text, whole_number
from gateway.mapping.compiler import HEADER_RE
from gateway.mapping.expressions import Getter, Run, compile_expression, is_truthy
from gateway.mapping.model import EvalError, LimitExceeded
from gateway.outbound.verdict import Verdict

if TYPE_CHECKING:
    from gateway.outbound.sender import Outcome

log = logging.getLogger(__name__)

MAX_RULES: Final = 20
_MEMBERS: Final = frozenset({"status", "body", "header", "then"})
_THEN: Final = {"retry": Verdict.RETRY, "fail": Verdict.FAIL}
_STATUS_CLASS = re.compile(r"^[1-5]xx$")
# RFC 9110 token; not a header that carries a credential or a cookie (`carries_credential`).
_QUOTED = 200  # characters of what a body rule found, quoted in an error


def status_listed(status: int, listed: Sequence[int | str]) -> bool:
    """Whether `status` is in a list of codes and classes (`[201, "4xx"]`)."""
    return any(status == s or (isinstance(s, str) and str(status)[0] == s[0]) for s in listed)


@dataclass(frozen=True, slots=True)
class AnswerRule:
    index: int
    statuses: tuple[int | str, ...]
    then: Verdict  # RETRY or FAIL
    header: str | None = None
    header_value: str | None = None  # None: the header present is enough
    body: Getter | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"answer_rules/{self.index}"

    def heads_match(self, outcome: Outcome) -> bool:
        """Whether the answer's status and header are the rule's (its body aside)."""
        status = outcome.status
        if status is None or not status_listed(status, self.statuses):
            return False
        if self.header is not None:
            said = outcome.headers.get(self.header)
            if said is None:
                return False
            if self.header_value is not None and said.strip() != self.header_value:
                return False
        return True

    def blind_to(self, outcome: Outcome) -> bool:
        """Whether the rule may have matched an answer it could not read (`Action.unchecked`):
        one of its statuses whose head was refused (`Outcome.headers_read`) while it reads a
        header, or whose body is unusable (`Outcome.error`) while it reads the body."""
        status = outcome.status
        if status is None or not status_listed(status, self.statuses):
            return False
        if self.header is not None:
            if not outcome.headers_read:
                return True
            if not self.heads_match(outcome):
                return False  # the header it needs was read, and is not the one it names
        return self.body is not None and outcome.error is not None

    def found(self, outcome: Outcome) -> Any:
        """What the body expression finds in the parsed answer (None: nothing, an unreadable
        body, or an expression that fails on it, as the action's `error` expression): as the
        sender's judgement found it when this rule decided (`Ruling`), else read now."""
        held = outcome.judgement
        if isinstance(held, Ruling) and held.rule is self:
            return held.found
        return self.read(outcome)

    def read(self, outcome: Outcome) -> Any:
        """What the body expression finds in the answer, read now (`found`)."""
        if self.body is None or not outcome.readable:
            return None
        try:
            value = self.body(outcome.json_body, Run())
        except (EvalError, LimitExceeded):
            return None
        except Exception:  # a bug: the rule does not match, and the status decides
            log.exception("%s could not read the answer: it does not match", self.name)
            return None
        return value if is_truthy(value) else None

    def describe(self, outcome: Outcome) -> str:
        """` (retry: answer_rules/0): ["Throttled"]`: the rule, and what its body expression
        found (already masked of what we sent: the sender redacts the parsed answer)."""
        said = f" ({'retry' if self.then is Verdict.RETRY else 'final'}: {self.name})"
        found = self.found(outcome)
        if found is None:
            return said
        try:
            text = found if isinstance(found, str) else orjson.dumps(found, default=str).decode()
        except orjson.JSONEncodeError:  # past the 254 levels orjson writes
            text = "a value nested too deep to quote"
        return f"{said}: {text[:_QUOTED]}"


@dataclass(frozen=True, slots=True)
class Ruling:
    """What an action's answer rules made of one answer (`rule_on`): the rule that decides it
    (None: none matched) and what its body expression found. The sender makes it once per
    answer (`sender.Outcome.judgement`): the breaker, the action's verdict and the error
    that names the rule read it, and no expression runs again."""

    rules: tuple[AnswerRule, ...]
    rule: AnswerRule | None = None
    found: Any = field(default=None, compare=False)

    @property
    def verdict(self) -> Verdict | None:
        return None if self.rule is None else self.rule.then


def rule_on(rules: tuple[AnswerRule, ...], outcome: Outcome) -> Ruling:
    """The first of `rules` that matches an answer, with what its body found: the sender's
    judgement when these rules made it, else worked out now."""
    held = outcome.judgement
    if isinstance(held, Ruling) and held.rules is rules:
        return held
    if outcome.status is None:
        return Ruling(rules)
    for rule in rules:
        if not rule.heads_match(outcome):
            continue
        if rule.body is None:
            return Ruling(rules, rule)
        if (found := rule.read(outcome)) is not None:
            return Ruling(rules, rule, found)
    return Ruling(rules)


def kept_headers(rules: Sequence[AnswerRule]) -> tuple[str, ...]:
    """The answer headers the rules read, kept with the outcome besides the usual ones."""
    return tuple(dict.fromkeys(r.header for r in rules if r.header is not None))


def compile_rules(
    stored: Sequence[Mapping[str, Any]] | None, whose: str = "an action"
) -> tuple[AnswerRule, ...]:
    """Stored (checked) rules as ready objects: compiled once per action revision. A body
    that no longer compiles (saved under other limits, or edited in the database) makes a
    rule that never matches, logged: the defaults decide the answers it was for (before
    read50 L5 the body was dropped, and the rule matched on its status alone, a wider match:
    every 500 of the partner final)."""
    if not stored:
        return ()
    rules = []
    for index, rule in enumerate(stored):
        header = rule.get("header") or {}
        rules.append(
            AnswerRule(
                index=index,
                statuses=tuple(rule["status"]),
                then=_THEN[rule["then"]],
                header=header.get("name"),
                header_value=header.get("value"),
                body=_compiled_body(rule["body"], index, whose) if rule.get("body") else None,
            )
        )
    return tuple(rules)


def _compiled_body(body: str, index: int, whose: str) -> Getter:
    getter, why = compile_expression(body)
    if getter is not None:
        return getter
    log.warning(
        "answer_rules/%d of %s never matches: its body does not compile (%s)", index, whose, why
    )
    return _finds_nothing


def _finds_nothing(root: Any, run: Run) -> Any:
    """The body of a rule whose stored body does not compile: it finds nothing, ever."""
    return None


def check_rules(value: Any, problems: list[FieldProblem]) -> list[dict[str, Any]] | None:
    """`answer_rules` as stored, or None (absent, or refused: its problems added, each
    naming the member, `/answer_rules/0/body`)."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_RULES:
        problems.append(
            FieldProblem(
                "/answer_rules",
                f"answer_rules is a list of at most {MAX_RULES} rules "
                '({"status": [...], "then": "retry" | "fail", "body"?, "header"?})',
                "type",
            )
        )
        return None
    before = len(problems)
    rules = [_check_rule(f"/answer_rules/{i}", rule, problems) for i, rule in enumerate(value)]
    if len(problems) > before:
        return None
    return [r for r in rules if r is not None]


def _check_rule(at: str, rule: Any, problems: list[FieldProblem]) -> dict[str, Any] | None:
    if not isinstance(rule, dict):
        problems.append(FieldProblem(at, "a rule is an object", "type"))
        return None
    _unknown(at, rule, _MEMBERS, problems)
    then = rule.get("then")
    checked: dict[str, Any] = {
        "status": _check_status(at, rule.get("status"), problems),
        "then": then,
    }
    if not isinstance(then, str) or then not in _THEN:  # `{}` is no key of a dict: a 500
        problems.append(FieldProblem(f"{at}/then", 'then is "retry" or "fail"', "enum"))
    if (body := rule.get("body")) is not None:
        if not is_text(body) or not body.strip():
            problems.append(FieldProblem(f"{at}/body", "body is a JMESPath expression", "type"))
        elif compile_expression(body)[0] is None:
            why = compile_expression(body)[1]
            problems.append(FieldProblem(f"{at}/body", f"body: {why}", "expression"))
        checked["body"] = body
    if (header := rule.get("header")) is not None:
        checked["header"] = _check_header(f"{at}/header", header, problems)
    return checked


def _check_status(at: str, status: Any, problems: list[FieldProblem]) -> list[int | str] | None:
    if (
        isinstance(status, list)
        and status
        and len(status) <= 50
        and all(
            ((code := whole_number(s)) is not None and 100 <= code <= 599)
            or (isinstance(s, str) and _STATUS_CLASS.match(s))
            for s in status
        )
    ):
        return [s if isinstance(s, str) else int(s) for s in status]
    problems.append(
        FieldProblem(
            f"{at}/status", 'status is a list of status codes or classes like "5xx"', "type"
        )
    )
    return None


def _check_header(at: str, header: Any, problems: list[FieldProblem]) -> dict[str, Any] | None:
    if not isinstance(header, dict):
        problems.append(FieldProblem(at, 'header is {"name": ..., "value"?: ...}', "type"))
        return None
    _unknown(at, header, ("name", "value"), problems)
    name, value = header.get("name"), header.get("value")
    if not is_text(name) or HEADER_RE.fullmatch(name) is None:
        problems.append(FieldProblem(f"{at}/name", "name is a header name", "pattern"))
    elif carries_credential(name):
        problems.append(
            FieldProblem(f"{at}/name", f"{name} may carry a credential: it is not read", "enum")
        )
    if value is not None and (not is_text(value) or len(value) > 200):
        problems.append(
            FieldProblem(f"{at}/value", "value is text of at most 200 characters", "type")
        )
    return {"name": name, **({"value": value.strip()} if is_text(value) else {})}


def _unknown(
    at: str, given: Mapping[str, Any], known: Collection[str], problems: list[FieldProblem]
) -> None:
    problems.extend(
        FieldProblem(f"{at}/{key}", f"unknown field {key!r}", "additionalProperties")
        for key in given
        if key not in known
    )
