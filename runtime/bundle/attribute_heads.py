"""The encoder's optional attribute-head output, typed: ``graphs.encoder.attribute_heads`` of the manifest.

A bundle exported from a checkpoint with attribute heads gives its encoder a third output (``attributes``,
float32 ``(batch, total values)``): each head field's softmax, one after the other. This section says where
each field's values lie in that row, in which order, and the temperature that calibrates them
(``softmax(log p / T)``; 1.0 leaves them as they are). The format is specified in ``docs/bundle.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .format import BundleError

MAX_HEAD_FIELDS = 256
MAX_HEAD_VALUES = 4096  # values of one field
TEMPERATURE_RANGE = (1e-3, 1e3)


@dataclass(frozen=True)
class HeadField:
    """One field of the attribute heads: its values in output order, where they start in the row, its temperature."""

    name: str
    values: tuple[str, ...]
    offset: int
    temperature: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {"name": self.name, "values": list(self.values), "offset": self.offset, "temperature": self.temperature}


@dataclass(frozen=True)
class AttributeHeads:
    """The encoder output ``output`` holds every field of ``fields`` side by side; ``calibration``: how the
    temperatures were fitted and what they changed (free-form, as export recorded it)."""

    output: str
    fields: tuple[HeadField, ...]
    calibration: Mapping[str, Any] = field(default_factory=dict)

    @property
    def total_values(self) -> int:
        """Width of the output row: every field's values."""
        return sum(len(f.values) for f in self.fields)

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {"output": self.output, "fields": [f.to_dict() for f in self.fields],
                "calibration": dict(self.calibration)}

    def with_temperatures(self, temperatures: Mapping[str, float], calibration: Mapping[str, Any]) -> AttributeHeads:
        """These heads with the given per-field temperatures (fields not named keep theirs) and calibration record."""
        fields = tuple(HeadField(f.name, f.values, f.offset, float(temperatures.get(f.name, f.temperature)))
                       for f in self.fields)
        return AttributeHeads(self.output, fields, dict(calibration))

    @classmethod
    def from_dict(cls, data: Any, where: str = "graphs.encoder.attribute_heads") -> AttributeHeads:
        """Validate the manifest form; :class:`BundleError` naming the key that is wrong."""
        if not isinstance(data, Mapping):
            raise BundleError(f"invalid manifest: {where}: expected an object")
        output = data.get("output")
        if not isinstance(output, str) or not 0 < len(output) <= 64:
            raise BundleError(f"invalid manifest: {where}.output: expected an output name")
        raw_fields = data.get("fields")
        if not isinstance(raw_fields, list) or not 0 < len(raw_fields) <= MAX_HEAD_FIELDS:
            raise BundleError(f"invalid manifest: {where}.fields: expected a list of 1 to {MAX_HEAD_FIELDS} fields")
        fields, offset = [], 0
        for i, f in enumerate(raw_fields):
            fields.append(_field(f, f"{where}.fields[{i}]", offset))
            offset += len(fields[-1].values)
        if len({f.name for f in fields}) != len(fields):
            raise BundleError(f"invalid manifest: {where}.fields: a field name appears twice")
        calibration = data.get("calibration", {})
        if not isinstance(calibration, Mapping):
            raise BundleError(f"invalid manifest: {where}.calibration: expected an object")
        return cls(output, tuple(fields), dict(calibration))


def _field(data: Any, where: str, offset: int) -> HeadField:
    """One field entry; its offset must follow the previous field's values (the row has no gaps)."""
    if not isinstance(data, Mapping):
        raise BundleError(f"invalid manifest: {where}: expected an object with name, values, offset, temperature")
    name, values = data.get("name"), data.get("values")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise BundleError(f"invalid manifest: {where}.name: expected a field name")
    if (not isinstance(values, list) or not 1 < len(values) <= MAX_HEAD_VALUES
            or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in values) or len(set(values)) != len(values)):
        raise BundleError(f"invalid manifest: {where}.values: expected 2 to {MAX_HEAD_VALUES} distinct value names")
    if data.get("offset") != offset or isinstance(data.get("offset"), bool):
        raise BundleError(f"invalid manifest: {where}.offset: expected {offset} (after the previous field's values), "
                          f"got {data.get('offset')!r}")
    t = data.get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) \
            or not TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1]:
        raise BundleError(f"invalid manifest: {where}.temperature: expected a number from {TEMPERATURE_RANGE[0]:g} "
                          f"to {TEMPERATURE_RANGE[1]:g}, got {t!r}")
    return HeadField(name, tuple(values), offset, float(t))


__all__ = ["AttributeHeads", "HeadField"]
