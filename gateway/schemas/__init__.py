"""Entity schemas and Brazilian identifiers: load `schemas/` once, validate, normalise, explain.

The only home of `jsonschema_rs`.
"""

from gateway.schemas.compiled import CompiledSchema, compile_schema
from gateway.schemas.registry import (
    ENTITY_TYPES,
    ENVELOPE_FIELDS,
    NATURAL_KEYS,
    SchemaRegistry,
    default_schema_dir,
    is_natural_key,
    lookup_key,
    reference_field,
)

__all__ = [
    "ENTITY_TYPES",
    "ENVELOPE_FIELDS",
    "NATURAL_KEYS",
    "CompiledSchema",
    "SchemaRegistry",
    "compile_schema",
    "default_schema_dir",
    "is_natural_key",
    "lookup_key",
    "reference_field",
]
