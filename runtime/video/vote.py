"""One track's attributes from its crops' parsed attributes: a vote per attribute, its agreement recorded.

Each crop has one vote per attribute; "not stated" (None, or no item carried) is a value like any
other, so two crops that see no hat outvote one that reads a cap. Ties go to the value whose crops
have the higher summed quality. ``carrying`` votes on the whole set of items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..attribute_schema import FIELDS


def _value(field_many: bool, value: Any) -> Any:
    if field_many:
        return tuple(sorted({str(v) for v in value or ()}))
    return value


def vote(attributes: Sequence[Mapping[str, Any]], weights: Sequence[float]) -> tuple[dict[str, Any], dict[str, float]]:
    """Voted attributes (the parser's shape: every key, lists for ``carrying``) and, per key, the share of
    crops that agree with the vote. ``weights`` (one per crop, e.g. quality scores) break ties."""
    if len(attributes) != len(weights):
        raise ValueError(f"{len(attributes)} attribute sets for {len(weights)} weights")
    voted: dict[str, Any] = {}
    agreement: dict[str, float] = {}
    n = len(attributes)
    for f in FIELDS:
        counts: dict[Any, list[float]] = {}
        for attrs, w in zip(attributes, weights):
            tally = counts.setdefault(_value(f.many, attrs.get(f.key)), [0, 0.0])
            tally[0] += 1
            tally[1] += float(w)
        if not counts:
            voted[f.key] = [] if f.many else None
            agreement[f.key] = 0.0
            continue
        # most votes, then the higher summed weight, then a fixed order (repeatable output)
        value, (count, _) = max(counts.items(), key=lambda kv: (kv[1][0], kv[1][1], repr(kv[0])))
        voted[f.key] = list(value) if f.many else value
        agreement[f.key] = round(count / n, 4)
    return voted, agreement


def agreement_with(attributes: Mapping[str, Any], voted: Mapping[str, Any]) -> int:
    """How many keys of one crop's attributes equal the voted ones."""
    return sum(_value(f.many, attributes.get(f.key)) == _value(f.many, voted.get(f.key)) for f in FIELDS)


def best_crop(attributes: Sequence[Mapping[str, Any]], voted: Mapping[str, Any], weights: Sequence[float]) -> int:
    """Index of the crop whose text to keep: the one that agrees with the vote on most keys, then the one with
    the highest weight (quality), then the earliest."""
    if not attributes:
        raise ValueError("no crops to choose from")
    return max(range(len(attributes)), key=lambda i: (agreement_with(attributes[i], voted), weights[i], -i))


__all__ = ["agreement_with", "best_crop", "vote"]
