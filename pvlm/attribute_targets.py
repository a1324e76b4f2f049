"""Attribute-head targets from a record's labels (torch-free: ``pvlm.data`` builds them while loading).

Targets come from a record's ``attributes``: synthetic data has them all, ``pvlm-data import`` writes the
ones a dataset labels (None for the rest), and an MSP60k ``one_hot`` is mapped by ``pvlm.data``. A record
without a field, a None, or a value outside the field's drawn values is :data:`IGNORE` for that field, and
the heads' loss leaves it out (``pvlm.train_step``).
"""

from __future__ import annotations

from typing import Any

from runtime.attribute_schema import FIELDS, AttributeField

IGNORE = -100
# the single-valued fields synth draws, in schema order
HEAD_FIELDS: tuple[AttributeField, ...] = tuple(f for f in FIELDS if f.drawn)


def attribute_targets(attributes: dict[str, Any]) -> list[int]:
    """A record's labels as class indices into each head field's ``drawn`` values (IGNORE where unknown)."""
    out = []
    for f in HEAD_FIELDS:
        value = attributes.get(f.key)
        if isinstance(value, (list, tuple)):  # a list-valued field: one item is a label, several are not
            value = value[0] if len(value) == 1 else ("none" if not value and "none" in f.drawn else None)
        out.append(f.drawn.index(value) if value in f.drawn else IGNORE)
    return out


__all__ = ["HEAD_FIELDS", "IGNORE", "attribute_targets"]
