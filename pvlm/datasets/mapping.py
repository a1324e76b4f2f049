"""Source labels -> the attribute schema: one :class:`Rule` per source label, one engine for every dataset.

A dataset's reader turns each crop's labels into :data:`Flags` (label name -> on, off, or unknown) and
its module's table (label name -> :class:`Rule`) says what each label means. :func:`map_labels` then
decides each schema field from the labels that speak about it:

- a label that is on says its ``value``; one that is off says its ``if_off`` (when it has one: ``Female``
  off is male, ``Hat`` off is no headwear), and what is on wins over what is off;
- a label whose ``value`` is None names something the schema has no word for (a chef's uniform, a box):
  when it is on the field is unknown, so a crop is never labelled with what it does not show;
- several values on at once: the outermost upper garment (the caption parser's rule), jeans over
  trousers, otherwise unknown (two colours, two views);
- ``carrying`` is a list: the objects that are on, ``[]`` only when every carrying label is off and each
  says so (``if_off="none"``), unknown when any carrying label is unknown or names an unknown object.

Every key of the schema is in the result; a field no label speaks about is None (unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.attribute_schema import COLOR_WORDS, FIELD, NOUN_WORDS, empty_attributes

Flags = dict[str, bool | None]  # source label -> on (True), off (False), unknown (None)

# Outermost first: what a caption names when a coat is worn over a shirt (runtime.attributes' rule).
UPPER_OUTERMOST = ("coat", "jacket", "vest", "hoodie", "sweater", "dress", "shirt", "t-shirt", "top")
_CARRY_ORDER = tuple(NOUN_WORDS["carrying"])


@dataclass(frozen=True)
class Rule:
    """What one source label says: ``field`` is ``value`` when the label is on, ``if_off`` when it is off.

    ``value=None``: something the schema cannot say; the field is unknown while the label is on.
    """

    field: str
    value: str | None
    if_off: str | None = None


def color_rule(name: str, field: str, prefix: str) -> Rule | None:
    """A colour label (``upperBodyBlack``, ``ub-Grey``, ``downblue``) -> ``field`` is its base colour, else None.

    The name after ``prefix`` (case-insensitive) must be one of the schema's colour words; ``silver``
    is grey and ``beige`` brown, as the caption parser reads them.
    """
    if not name.lower().startswith(prefix.lower()):
        return None
    hit = COLOR_WORDS.get(name[len(prefix):].lower())
    return Rule(field, hit[0]) if hit else None


def map_labels(flags: Flags, table: dict[str, Rule]) -> dict[str, Any]:
    """One crop's labels -> every schema key (None where unknown; ``carrying`` a list, ``[]`` for nothing)."""
    out: dict[str, Any] = {**empty_attributes(), "carrying": None}
    by_field: dict[str, list[tuple[Rule, bool | None]]] = {}
    for name, state in flags.items():
        rule = table.get(name)
        if rule is not None:
            by_field.setdefault(rule.field, []).append((rule, state))
    for key, said in by_field.items():
        out[key] = _decide(key, said)
    return out


def _decide(key: str, said: list[tuple[Rule, bool | None]]) -> Any:
    on = {r.value for r, s in said if s}
    off = {r.if_off for r, s in said if s is False and r.if_off is not None}
    unknown = any(s is None for _, s in said)
    if None in on:
        return None
    if FIELD[key].many:
        if unknown:
            return None
        if on:
            return sorted(on, key=_CARRY_ORDER.index)
        every_off_says_none = all(r.if_off == "none" for r, _ in said)
        return [] if every_off_says_none else None
    if on:
        return next(iter(on)) if len(on) == 1 else _resolve(key, on)
    if unknown or len(off) != 1:
        return None
    return off.pop()


def _resolve(key: str, values: set[str]) -> str | None:
    if key == "upper":
        return next(v for v in UPPER_OUTERMOST if v in values) if values <= set(UPPER_OUTERMOST) else None
    if key == "lower" and values == {"jeans", "trousers"}:
        return "jeans"
    return None


__all__ = ["UPPER_OUTERMOST", "Flags", "Rule", "color_rule", "map_labels"]
