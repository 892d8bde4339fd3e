"""File helpers for `gateway mapping validate FILE` and `gateway mapping test FILE SAMPLE`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from ..errors import BadRequest, FieldProblem, InvalidPayload
from ..formats import DocumentRefused, load_json_text, parse_xml
from ..formats.bodies import FORM, parse_form, parse_json, starts_as
from ..formats.charsets import text_codec
from .engine import CompiledMapping
from .expressions import DecodedTexts
from .fixes import parse_mapped_fix
from .limits import MAX_FILE_BYTES
from .loader import file_text, load_mapping
from .model import IF_ABSENT, FieldCatalog, MappedDocument, MappedTarget, announces

_MAX_SAMPLE_BYTES = 16 * 1024 * 1024


def _read(path: str | Path, limit: int) -> bytes:
    with open(path, "rb") as file:
        return file.read(limit + 1)  # one byte over the limit is enough to refuse it


def _xml_sample(document: bytes | str) -> Any:
    try:
        return parse_xml(document)
    except DocumentRefused as exc:
        problem = FieldProblem("", f"malformed XML: {exc.located()}", "xml")
        raise InvalidPayload("the sample is not valid XML", [problem]) from None


# XML: `<` first after blanks, in UTF-8 (a byte order mark or none) or in UTF-16 with its
# byte order mark; a UTF-16 sample that is not XML (JSON saved by Notepad or PowerShell) is
# told to be saved as UTF-8, not called malformed XML.
_XML_START: Final = re.compile(
    rb"(?:\xef\xbb\xbf)?[ \t\r\n]*<|\xff\xfe(?:[ \t\r\n]\x00)*<\x00|\xfe\xff(?:\x00[ \t\r\n])*\x00<"
)


def _sample(raw: bytes, charset: str | None = None) -> Any:
    """A sample file: XML read from its bytes as an XML trigger reads them (a byte order mark,
    else the XML declaration's encoding: ISO-8859-1, windows-1252, UTF-16, ...); anything else
    as a JSON or form trigger reads such a body (`_body`), `charset` as the request's
    Content-Type would name it (a file names none)."""
    if _XML_START.match(raw):
        return _xml_sample(raw)
    return _body(raw, charset)


def _body(raw: bytes, charset: str | None = None) -> Any:
    """A sample that is not XML, read by the trigger's own code (gateway/formats/bodies.py):
    JSON as a JSON trigger reads it (an object; an array or JSON Lines, a batch; a JSON
    string, number or null refused with the trigger's 400 message: a double-encoded body),
    anything else as a form or query string. InvalidPayload naming why the trigger would
    refuse it."""
    try:
        if _is_json(raw, charset):
            return parse_json("application/json", raw, charset)
        return parse_form(FORM, raw if charset else _utf8(raw), "", charset)
    except BadRequest as exc:
        message = f"a trigger refuses this body: {exc.detail}"
        raise InvalidPayload(message, [FieldProblem("", exc.detail, "body")]) from None


def _is_json(raw: bytes, charset: str | None = None) -> bool:
    """Whether a sample is JSON to a trigger: it starts as an object, an array or a string
    does, or is another JSON value (`42`, `null`); a form's text is none of these."""
    if starts_as(raw, b"{", b"[", b'"'):
        return True
    codec = text_codec(charset) if charset else "utf-8-sig"
    if codec is None:  # an unknown charset: the form reader refuses it
        return False
    try:
        load_json_text(raw.decode(codec))
    except (UnicodeDecodeError, DocumentRefused):
        return False
    return True


def _utf8(raw: bytes) -> bytes:
    """A form sample's bytes; InvalidPayload (not a traceback) when they are not UTF-8, which
    a trigger refuses unless the request's charset says otherwise (a file names none)."""
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        message = (
            f"the sample is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
            "save it as UTF-8, or name its charset (--charset windows-1252)"
        )
        raise InvalidPayload(message, [FieldProblem("", message, "encoding")]) from None
    return raw


def validate_file(
    path: str | Path, *, catalog: FieldCatalog | None = None, charset: str | None = None
) -> tuple[list[FieldProblem], tuple[str, ...]]:
    """Every problem in a mapping file ([] when it is valid), and the warnings an upload of
    it would answer (old names it uses, `CompiledMapping.deprecated`). The file is read as an
    upload is (`file_text`): a byte order mark's encoding, UTF-8, or else `charset`."""
    try:
        raw = _read(path, MAX_FILE_BYTES)
    except OSError as exc:
        return [FieldProblem("", f"cannot read {path}: {exc.strerror}", "file")], ()
    try:
        text = file_text(raw, charset)
        mapping = load_mapping(text, catalog=catalog, filename=str(path))
    except InvalidPayload as exc:
        return exc.problems, ()
    return [], mapping.deprecated


def read_sample(text: str) -> Any:
    """A sample payload given as text (the dry run's pasted `payload`): XML (text starting
    with `<`, read as an XML trigger reads it), else its UTF-8 bytes as a JSON or form
    trigger reads them (`_body`): JSON (JSON Lines a batch), or a query string / form body
    as a flat dict of strings (for a repeated name the last value wins, and values stay
    strings: mappings cast them). A leading `?` of a query string is dropped."""
    if text.lstrip().startswith("<"):
        return _xml_sample(text.lstrip())
    return _body(text.strip().removeprefix("?").encode())


def test_file(
    path: str | Path,
    sample_path: str | Path,
    *,
    response: bool = False,
    secrets: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    catalog: FieldCatalog | None = None,
    charset: str | None = None,
) -> dict[str, Any]:
    """Run a mapping file on a sample; raise InvalidPayload when either is wrong.

    Inbound: `{"target", "results": [{"index", "document", "key", "events", "event_data",
    "occurrence_id"?, "only_forward"?, "also"?}, ...]}`, one per item, as the API's dry run
    gives them: an item of a batch that does not fit is `{"index", "errors"}` (a sample that
    is one item raises); a position mapping's documents are canonical fixes, checked as the
    trigger checks them, `"fix": {"errors"}` (empty when the append takes it); a partner's
    test call that
    the mapping's `probe` recognises: `{"probe": answer}`, as the trigger answers it; the
    mapping's `answer`, the members the trigger adds to its 2xx answers, under `answer`.
    Outbound: `{"request": {"path_params", "query", "headers", "body"}}`, or with
    `response=True` the sample is the partner's answer: `{"response": {...entity fields}}`.
    Secrets the mapping names but `secrets` lacks are shown as `<secret:name>`; `params` are
    a trigger's params, checked against the mapping's declarations; `charset`, the sample's
    (JSON or a form not in UTF-8), as a request's Content-Type names it, and the mapping
    file's when it is not UTF-8 (`file_text`, as an upload labelled so reads it).
    """
    text = file_text(_read(path, MAX_FILE_BYTES), charset)
    mapping = load_mapping(text, catalog=catalog, filename=str(path))
    mapping = mapping.bind(params or {}, strict=True)
    sample = _sample(_read(sample_path, _MAX_SAMPLE_BYTES), charset)
    known = {name: f"<secret:{name}>" for name in mapping.secrets} | (secrets or {})
    if mapping.direction == "inbound":
        if (answer := mapping.probe(sample)) is not None:
            # what the trigger would answer, as the dry run shows it: nothing to map
            return {"name": mapping.name, "direction": "inbound", "probe": answer}
        results = []
        texts = DecodedTexts()
        items, numbers = mapping.numbered_items(sample, texts=texts)
        single = len(items) == 1 and items[0] is sample
        for index, item in enumerate(items):
            number = index if numbers is None else numbers[index]  # the partner's, as answered
            try:
                mapped = mapping.apply(item, secrets=known, texts=texts)
            except InvalidPayload as exc:
                if single:  # the sample itself does not fit: its problems, as the dry run's
                    raise
                # One item of a batch: its own problems, the others' results shown, as the
                # dry run and a trigger's per-item answer (207) give them.
                results.append({"index": number, **exc.listing()})
                continue
            tested = {"index": number, **_tested(mapping, mapped)}
            if mapping.target == "positions":  # what the append would refuse, as the dry run
                tested["fix"] = _fix_problems(mapping, mapped.document)
            results.append(tested)
        tested_file: dict[str, Any] = {
            "name": mapping.name,
            "direction": "inbound",
            "target": mapping.target,
            "results": results,
        }
        if (acknowledgement := mapping.acknowledgement) is not None:
            tested_file["answer"] = acknowledgement  # added to the trigger's 2xx answers
        return tested_file
    if response:
        return {
            "name": mapping.name,
            "direction": "outbound",
            "response": mapping.map_response(sample),
        }
    request = mapping.build_request(sample, secrets=known)
    return {
        "name": mapping.name,
        "direction": "outbound",
        "request": {
            "path_params": request.path_params,
            "query": request.query,
            "headers": request.headers,
            "body": request.body,
        },
    }


def _fix_problems(mapping: CompiledMapping, document: Any) -> dict[str, Any]:
    """The problems of the fix a position mapping made, as the trigger names them."""
    try:
        parse_mapped_fix(mapping, document)
    except InvalidPayload as exc:
        return exc.listing()
    return {"errors": []}


test_file.__test__ = False  # type: ignore[attr-defined]  # a CLI helper, not a pytest test


def _tested(mapping: CompiledMapping, mapped: MappedDocument) -> dict[str, Any]:
    """One item's result: what it maps to, the events `when` lets through (with their
    `announce` where it is not the default) and, when the mapping declares one, its
    `occurrence_id` (null: the item gives none, its events are announced every time)."""
    result: dict[str, Any] = {
        "document": mapped.document,
        "key": mapped.key,
        "events": list(mapped.event_types),
        "event_data": mapped.event_data,
    }
    if mapping.has_occurrence_id:
        result["occurrence_id"] = mapped.occurrence
    if shown := announces(mapped.events):
        result["announce"] = shown
    if mapped.forward:
        result["only_forward"] = [_guarded(f, by) for f, by in mapped.forward]
    if mapped.also:
        result["also"] = [_tested_target(t) for t in mapped.also]
    return result


def _tested_target(target: MappedTarget) -> dict[str, Any]:
    result: dict[str, Any] = {
        "entity_type": target.entity_type,
        "document": target.document,
        "key": target.key,
        "events": list(target.event_types),
    }
    if shown := announces(target.events):
        result["announce"] = shown
    if target.forward:
        result["only_forward"] = [_guarded(f, b) for f, b in target.forward]
    return result


def _guarded(target: str, by: str) -> dict[str, Any]:
    """A guarded field as the dry run shows it: ordered `by` a field, or `if_absent`."""
    return {"field": target, "if_absent": True} if by == IF_ABSENT else {"field": target, "by": by}
