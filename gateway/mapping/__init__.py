"""The mapping language: declarative files that reshape partner payloads, and their engine.

Pure: no I/O but `validate_file`/`test_file`, no database, no HTTP. The language is defined
by `schemas/mapping.schema.json` and documented in `docs/mappings.md`.

    load_mapping(text, *, catalog=None, filename=None) -> CompiledMapping
        Parse YAML or JSON (JSON when the text is a JSON object), check every rule and
        limit, compile. Raises InvalidPayload listing every problem, each with a JSON Pointer
        into the file and extra={"line": n, ...}.

    CompiledMapping
        .name .direction .entity_type .kind .key_fields .emit .secrets .source .checksum
        .params                                      declared params (`params:`), by name
        .param_problems(values) -> [FieldProblem]    params, checked and compiled (/params/x)
        .bind(values, *, strict=False) -> CompiledMapping   compiled once per set of values
        inbound:  .probe(payload) -> dict | None     the answer to a partner's ping, if it is one
                  .items(payload, *, texts=None) -> list   batch items; one object -> [payload]
                  .apply(item, *, secrets=None, texts=None) -> MappedDocument(document, key,
                                                  events, event_data, forward, also: [MappedTarget],
                                                  lifted, occurrence)
                  .has_occurrence_id                 whether `occurrence_id` is declared
        DecodedTexts()   one per payload, given to its items() and every item's apply(): each
                         text from_json()/from_xml() reads is parsed once per payload, and
                         what the items map to together is bounded (MAX_PAYLOAD_OUTPUT_CHARS)
                  .also_entity_types                 entity types `also` writes, in order
        outbound: .build_request(context, *, secrets=None) -> OutboundRequest(path_params,
                                                                 query, headers, body)
                  .map_response(body) -> dict        entity fields from a partner answer
        A payload that does not fit raises InvalidPayload whose problems name the target
        field (extra["target"]), the source expression (extra["source"]) and, for a plain
        path source, its JSON Pointer in the payload.

    FieldCatalog    protocol: has_field(entity_type, dotted_path, *, kind=None) -> bool
    flatten(doc) / unflatten(flat)                   nested <-> dotted keys
    validate_file(path) -> (problems, warnings)      for `gateway mapping validate`
    test_file(path, sample_path, *, response=False, params=None) -> dict
                                                     for `gateway mapping test`

Limits (file size, fields, nesting, expression length, list sizes, work per item) are the
constants in `gateway.mapping.limits`.
"""

from .engine import CompiledMapping
from .expressions import DecodedTexts
from .files import read_sample, test_file, validate_file
from .loader import file_text, load_mapping
from .model import (
    Direction,
    Emit,
    FieldCatalog,
    MappedDocument,
    MappedTarget,
    OutboundRequest,
    announces,
)
from .paths import flatten, unflatten
from .transforms import TRANSFORM_NAMES

__all__ = [
    "TRANSFORM_NAMES",
    "CompiledMapping",
    "DecodedTexts",
    "Direction",
    "Emit",
    "FieldCatalog",
    "MappedDocument",
    "MappedTarget",
    "OutboundRequest",
    "announces",
    "file_text",
    "flatten",
    "load_mapping",
    "read_sample",
    "test_file",
    "unflatten",
    "validate_file",
]
