"""Limits that keep loading, compiling and evaluating a mapping bounded, whatever the file says.

Load and compile time (an upload over a limit is rejected whole, with the limit named):
"""

MAX_FILE_BYTES = 256 * 1024
"""Size of a mapping file, checked before anything parses it."""
MAX_DOCUMENT_NODES = 50_000
"""YAML/JSON nodes (scalars, lists, objects) in one file."""
MAX_DOCUMENT_DEPTH = 32
"""Nesting of lists and objects in one file."""
MAX_FIELDS = 500
"""Field specs in one mapping, nested ones (inside each, when, object, ...) included."""
MAX_SPEC_DEPTH = 8
"""Nesting of specs inside specs."""
MAX_TRANSFORMS = 20
"""Transforms in one pipeline."""
MAX_EXPRESSION_LENGTH = 1_000
"""Characters in one JMESPath expression."""
MAX_EXPRESSION_DEPTH = 40
"""Depth of one parsed JMESPath expression (brackets, pipes, dots)."""
MAX_PROBLEMS = 100
"""Problems reported for one file or one payload; the rest are summed up in one last problem."""

# Evaluation time (a payload over a limit is rejected with keyword "limit"):
MAX_LIST_ITEMS = 1_000
"""Elements of a batch (`items`) or of a list mapped with `each`. A schedule's polled page,
already read, may list more (`schedules.sinks.MAX_PAGE_ITEMS`): it is landed in batches of
this many."""
MAX_NESTED_ITEM_FIELDS = 1_000_000
"""Fields the items of `items: {from, each, as}` carry together: each item is a copy of its
outer element (1,000 items of an element with 100,000 fields would be gigabytes)."""
MAX_STEPS = 100_000
"""Work for one item: JMESPath nodes visited, values built by multi-selects, `each` elements,
and transforms applied (TRANSFORM_STEPS each; a `datetime`, PARSE_FORMAT_STEPS for each
`parse` format it may try). A mapping whose transforms alone would weigh more than this for
one item (each spec counted once, however many elements an `each` gives it) is refused when
it is uploaded. One step is a fraction of a microsecond of one core."""
MAX_PAYLOAD_STEPS = 3_000_000
"""Work for the items of one payload together (a batch, a polled page's batch, a dry run's sample),
counted as MAX_STEPS counts one item's, except the documents from_json()/from_xml() read
(parsed once for the payload, not again for each item reading one): about a second of one
core, during which the process answers others only between items. Past it, each further item
is refused (keyword `limit`, kept for replay as any refused item): 200 items of 500 fields
each parsing a time with 8 formats held a process for 25 s. A payload of one item has
MAX_STEPS only."""
TRANSFORM_STEPS = 1
"""The work one transform costs each time it is applied (a `datetime`: see below)."""
PARSE_FORMAT_STEPS = 30
"""The work a `datetime` transform costs for each format of its `parse` (it may try them
all): reading a time is some 30 times the work of a plain transform (10 microseconds)."""
MAX_OUTPUT_CHARS = 1024 * 1024
"""Size of what one item maps to (its fields or a request's body), roughly in characters as
JSON: strings by their length, containers and other values a few each, a value counted again
wherever it is used (`{a: @, b: @}` is twice the payload, 50 fields naming one text 50 times
it, `[x, x]` twice the `x` a multi-select built). Without it a 200 KB payload and a
mapping that names it many times built gigabytes to validate, store or send."""
MAX_PAYLOAD_OUTPUT_CHARS = 16 * 1024 * 1024
"""What the items of one payload (a batch, a polled page's batch) map to together, counted as
MAX_OUTPUT_CHARS counts one item's: 1,000 items of 1 MiB each were 1 GB (20 s of one
viewer's dry run of a 230 KB sample), where a batch's items are a body's worth. A trigger
whose `max_body_bytes` is over 1 MiB has 16 times that."""
MAX_STRING_LENGTH = 65_536
"""Characters of a string built by a template, `pad`, `join()` or `to_string()`."""
MAX_DECODED_TEXT = 1024 * 1024
"""Characters of the text `from_json()` or `from_xml()` reads (a body's default size limit)."""
