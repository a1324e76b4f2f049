"""The ``pvlm-describe --json`` line: its builder and its JSON Schema (one source of truth, torch-free).

Export copies :func:`description_schema` into every bundle as ``description.schema.json``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .attribute_schema import ATTRIBUTE_KEYS, FIELDS

SCHEMA_VERSION = 1
SCHEMA_FILE = "description.schema.json"


def bundle_id(bundle_dir: str | Path) -> str:
    """16 hex digits of the sha256 of the bundle's ``manifest.json``, which lists every artefact's sha256."""
    return hashlib.sha256((Path(bundle_dir) / "manifest.json").read_bytes()).hexdigest()[:16]


def description_record(image: str, description: Any, *, bundle: str, backend: str,
                       tokens: bool = False) -> dict[str, Any]:
    """One ``--json`` line for a :class:`runtime.Description`: timings rounded to 0.1 ms, token ids only if asked."""
    timings = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in description.timings.items()}
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "bundle_id": bundle, "backend": backend, "image": image,
        "text": description.text, "attributes": description.attributes, "timings": timings,
        "error": description.error,
    }
    if tokens:
        record["tokens"] = list(description.tokens)
    return record


def description_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one ``pvlm-describe --json`` line."""
    attribute_props = {
        f.key: {"type": "array", "items": {"type": "string"}} if f.many else {"type": ["string", "null"]}
        for f in FIELDS
    }
    attribute_props = {**attribute_props, **_head_props(attribute_props)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"personvlm-description-v{SCHEMA_VERSION}",
        "title": "pvlm-describe --json line",
        "description": "One image's description. A failed image has error set, empty text and empty attributes.",
        "type": "object",
        "required": ["schema_version", "bundle_id", "backend", "image", "text", "attributes", "timings", "error"],
        "additionalProperties": False,
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "bundle_id": {"type": "string", "pattern": "^[0-9a-f]{16}$",
                          "description": "First 16 hex digits of the sha256 of the bundle's manifest.json."},
            "backend": {"type": "string", "description": "The runtime backend that produced the text."},
            "image": {"type": "string", "description": "The path as given (or as read from stdin)."},
            "text": {"type": "string"},
            "attributes": {
                "description": "Parsed from text; null where the text does not say (not a negative finding). With a "
                               "bundle whose encoder has attribute heads: the stated values, combined from the text "
                               "and the heads' calibrated probabilities, which the other keys carry (null where the "
                               "model abstained; docs/attributes.md).",
                "anyOf": [
                    {"type": "object", "maxProperties": 0},
                    {"type": "object", "required": list(ATTRIBUTE_KEYS), "properties": attribute_props},
                ],
            },
            "timings": {
                "type": "object",
                "description": "Of the batch this image ran in: *_ms in milliseconds (0.1 ms steps), batch and "
                               "steps as counts. Empty for a failed image.",
                "additionalProperties": {"type": "number", "minimum": 0},
            },
            "error": {"type": ["string", "null"]},
            "tokens": {"type": "array", "items": {"type": "integer", "minimum": 0},
                       "description": "Generated token ids (without BOS/EOS); only with --tokens."},
            "alternatives": {
                "type": "array",
                "description": "Every returned sequence, best first (the first is text): with --beams, --sample "
                               "or --n-best above 1.",
                "items": {"type": "object", "required": ["text", "score", "attributes"],
                          "additionalProperties": False,
                          "properties": {"text": {"type": "string"}, "score": {"type": ["number", "null"]},
                                         "attributes": {"type": "object", "required": list(ATTRIBUTE_KEYS),
                                                        "properties": attribute_props},
                                         "tokens": {"type": "array",
                                                    "items": {"type": "integer", "minimum": 0}}}},
            },
        },
    }


def _head_props(attribute_props: dict[str, Any]) -> dict[str, Any]:
    """The optional keys the attribute heads add to ``attributes`` (``runtime.attribute_confidence.combine``)."""
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    fields = {"type": "array", "items": {"enum": list(ATTRIBUTE_KEYS)}}
    return {
        "probabilities": {"type": "object", "description": "Per head field, each value's calibrated probability.",
                          "additionalProperties": {"type": "object", "additionalProperties": probability}},
        "heads": {"type": "object", "description": "Per head field, the heads' most probable value.",
                  "additionalProperties": {"type": "string"}},
        "text": {"type": "object", "description": "The values parsed from the text alone.",
                 "required": list(ATTRIBUTE_KEYS), "properties": attribute_props},
        "confidence": {"type": "object", "description": "Per head field, the probability of the stated value "
                                                        "(null: nothing stated, or a value the heads cannot judge).",
                       "additionalProperties": {"anyOf": [probability, {"type": "null"}]}},
        "disagreements": {**fields, "description": "Fields where the text's value is not the heads' top value."},
        "abstained": {**fields, "description": "Fields reported unknown: below the minimum confidence."},
    }


__all__ = ["SCHEMA_FILE", "SCHEMA_VERSION", "bundle_id", "description_record", "description_schema"]
