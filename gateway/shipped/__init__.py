"""What the gateway ships beside its code, installed with the package (package data), so an
installed gateway (`pip install .`, the container image) finds it without a source checkout:
the flow and mapping languages' JSON Schemas, the default entity and kind schemas
(GATEWAY_SCHEMA_DIR replaces those), and the partner mappings, flows and templates that
`gateway demo` loads. The repository's top-level `schemas/`, `mappings/` and `flows/` are
links to these directories."""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).resolve().parent
SCHEMAS = SHIPPED / "schemas"
MAPPINGS = SHIPPED / "mappings"
FLOWS = SHIPPED / "flows"
