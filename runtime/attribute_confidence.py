"""The attribute heads' calibrated probabilities beside the values parsed from the text, and how they combine.

A bundle whose encoder has attribute heads gives, per image, one probability per value of each head field
(``graphs.encoder.attribute_heads``). :func:`head_distributions` calibrates that row with the manifest's
temperatures; :func:`combine` states one value per field from the text and the heads (:class:`CombineRule`,
the rule and its numbers: ``docs/attributes.md``):

- the text states a value the heads agree with: that value;
- the text says nothing: the heads' top value when its probability is at least ``fill``;
- the two disagree: the heads' top value when its probability is at least ``override``, else the text's;
- abstention (``min_confidence`` > 0): a stated value whose probability is below it becomes unknown (None,
  or an empty list for ``carrying``), and the field is listed under ``abstained``.

For ``headwear`` and ``carrying`` a text that names none means "none" (captions name a hat or a bag when
there is one), so the heads' ``none`` agrees with silence. A value the heads have no class for (a dress, a
bare "dark") keeps the text's word with no probability, and abstention leaves it alone.

The result keeps every key of the parser's output (now the stated values) and adds ``probabilities``
(field -> value -> calibrated probability), ``heads`` (field -> top value), ``text`` (the parser's output),
``confidence`` (field -> probability of the stated value, None where the heads cannot say), ``disagreements``
and ``abstained`` (field lists).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .attribute_schema import FIELD
from .bundle import AttributeHeads
from .calibration import apply_temperature

# Chosen on the synthetic held-out set (docs/attributes.md): the heads fill a silent text above FILL and
# overrule a disagreeing one above OVERRIDE.
FILL = 0.5
OVERRIDE = 0.9
_DIGITS = 6  # probabilities in the output: enough to rank by and to undo the temperature (pvlm-eval)


@dataclass(frozen=True)
class CombineRule:
    """Thresholds of :func:`combine`: ``fill`` and ``override`` (heads' top probability) and ``min_confidence``
    (abstain below it; 0 never abstains)."""

    fill: float = FILL
    override: float = OVERRIDE
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fill", "override", "min_confidence"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")


def head_distributions(row: np.ndarray, heads: AttributeHeads) -> dict[str, dict[str, float]]:
    """One image's encoder ``attributes`` row (values,) -> field -> value -> calibrated probability."""
    out = {}
    for f in heads.fields:
        p = apply_temperature(np.asarray(row[f.offset:f.offset + len(f.values)], np.float64), f.temperature)
        out[f.name] = {v: round(float(x), _DIGITS) for v, x in zip(f.values, p)}
    return out


def _absence_is_none(key: str) -> bool:
    field = FIELD.get(key)
    return field is not None and "none" in field.drawn


def _text_value(key: str, parsed: Any) -> str | None:
    """The parser's value of ``key`` as one head value: lists give their first item, silence gives ``none``
    where absence means none, else None."""
    if isinstance(parsed, list):
        parsed = parsed[0] if parsed else None
    if parsed is None and _absence_is_none(key):
        return "none"
    return parsed


def _as_parsed(key: str, value: str | None) -> Any:
    """A head value in the parser's shape: ``none`` -> None (or []), a list for list-valued fields."""
    field = FIELD.get(key)
    if value == "none" and "none" in (field.drawn if field else ()):
        value = None
    if field is not None and field.many:
        return [] if value is None else [value]
    return value


def _choose(text: str | None, dist: Mapping[str, float], rule: CombineRule) -> tuple[str | None, str]:
    """(stated value, where it came from: text, heads, both or none) for one field."""
    top = max(dist, key=dist.__getitem__)
    if text == top:
        return text, "both"
    if text is None:
        return (top, "heads") if dist[top] >= rule.fill else (None, "none")
    if text not in dist:  # a value the heads have no class for: only the text can say it
        return text, "text"
    return (top, "heads") if dist[top] >= rule.override else (text, "text")


def combine(parsed: Mapping[str, Any], distributions: Mapping[str, Mapping[str, float]],
            rule: CombineRule = CombineRule()) -> dict[str, Any]:
    """The stated attributes of one description from its parsed text and the heads' distributions (see the
    module docstring for the rule and the keys it adds)."""
    out = dict(parsed)
    confidence: dict[str, float | None] = {}
    disagreements, abstained = [], []
    for key, dist in distributions.items():
        if key not in FIELD or not dist:
            continue
        top = max(dist, key=dist.__getitem__)
        listed = parsed.get(key)
        # a list that names the heads' top value agrees with it (the text may name several carried objects)
        text = top if isinstance(listed, list) and top in listed else _text_value(key, listed)
        value, source = _choose(text, dist, rule)
        if text is not None and text in dist and text != top:
            disagreements.append(key)
        p = dist.get(value) if value is not None else None
        if p is not None and p < rule.min_confidence:
            abstained.append(key)
            value, source, p = None, "abstained", None
        confidence[key] = p
        if source in ("text", "both"):
            continue  # the text's own words stand (its list, its shade)
        out[key] = _as_parsed(key, value)
        if FIELD[key].kind == "color" and out[key] != listed:
            out[f"{FIELD[key].part}_shade"] = None  # the text's shade belonged to the colour it named
    out.update(probabilities={k: dict(v) for k, v in distributions.items()},
               heads={k: max(v, key=v.__getitem__) for k, v in distributions.items() if v},
               text=dict(parsed), confidence=confidence, disagreements=disagreements, abstained=abstained)
    return out


__all__ = ["FILL", "OVERRIDE", "CombineRule", "combine", "head_distributions"]
