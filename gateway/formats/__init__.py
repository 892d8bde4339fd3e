"""Partner documents read safely into JSON-like trees (dicts, lists, text, numbers).

    json_tree.py  JSON nested at most MAX_DEPTH deep
    xml_tree.py   XML (SOAP included) by one documented convention, with no DTD, no
                  entity expansion and bounded depth
    xml_writer.py the other way: a JSON-like answer or an RFC 9457 problem as XML, or in a
                  SOAP 1.1/1.2 envelope (a problem as the Fault)

Pure: bytes or text in, a tree or a `DocumentRefused` (with a line and column when the
parser knows them) out. Triggers, the mapping language and the outbound sender share it.
"""

from .json_tree import MAX_DEPTH, at_path, json_depth_exceeds, load_json_text
from .refusal import DocumentRefused
from .xml_tree import XML_CONTENT_TYPES, element_text, is_xml, parse_xml, root_name

__all__ = [
    "MAX_DEPTH",
    "XML_CONTENT_TYPES",
    "DocumentRefused",
    "at_path",
    "element_text",
    "is_xml",
    "json_depth_exceeds",
    "load_json_text",
    "parse_xml",
    "root_name",
]
