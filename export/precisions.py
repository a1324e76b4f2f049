"""The precisions a bundle's graphs come in besides FP32: one :class:`PrecisionSpec` each.

A spec says where a variant's files go, what its verification must show (:class:`Gate`), how
many images it is verified on and which graphs go back to FP32 when it misses. The builders
(``export/fp16.py``, ``export/int8.py``) return a :class:`Variant`; ``export/variants.py``
builds, verifies and gates it. This module imports neither side, so both import it.
Rationale and measurements: docs/precision.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Gate:
    """What a variant's free-running verification against PyTorch FP32 must show to be kept.

    ``attribute_agreement``: floor on the share of parsed attribute fields that agree.
    ``confident_divergence_rate``: ceiling on the share of sequences that first differ where
    FP32's logit margin is larger than the variant's measured teacher-forced logit error.
    """

    attribute_agreement: float
    confident_divergence_rate: float = 0.005


@dataclass(frozen=True)
class PrecisionSpec:
    """One precision: its name (``fp16``), gate, verification images and fallbacks.

    ``fallbacks``: graphs sent back to FP32 when the variant misses its gate, one group after
    the other; the rest is verified again each time and the first group that passes is kept.
    """

    name: str
    gate: Gate
    verify_images: int
    fallbacks: tuple[tuple[str, ...], ...] = ()

    def file(self, fp32_file: str) -> str:
        """The variant's file beside a graph's FP32 file: ``encoder.onnx`` -> ``encoder.fp16.onnx``."""
        path = Path(fp32_file)
        return path.with_name(f"{path.stem}.{self.name}{path.suffix}").as_posix()


# Fallbacks as measured (docs/precision.md): the FP16 decoder flips greedy near-ties of a trained small
# model while its FP16 encoder alone does not; the INT8 encoder costs attribute agreement, the INT8
# decoder_ort alone keeps it.
SPECS: dict[str, PrecisionSpec] = {
    "fp16": PrecisionSpec("fp16", Gate(attribute_agreement=0.995), verify_images=64,
                          fallbacks=(("decoder", "cross_ort", "decoder_ort"), ("encoder",))),
    "int8": PrecisionSpec("int8", Gate(attribute_agreement=0.98), verify_images=200,
                          fallbacks=(("encoder",),)),
}
PRECISIONS: tuple[str, ...] = tuple(SPECS)
# Verification images' seed: another one than the FP32 parity run's (0) and INT8 calibration's (2).
VERIFY_SEED = 1


def precision_spec(precision: str) -> PrecisionSpec:
    """The spec of ``precision``; a ValueError naming the choices for any other name."""
    try:
        return SPECS[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(SPECS)}") from None


@dataclass(frozen=True)
class VariantOptions:
    """Knobs for building variants: INT8 calibration data (JSONL of images; default synthetic crops)."""

    calibration: Path | None = None
    calibration_images: int = 64


@dataclass(frozen=True)
class Variant:
    """The graphs a precision variant replaces (name -> file in the bundle) and how they were made."""

    precision: str
    graphs: dict[str, str]
    plan: dict[str, Any] = field(default_factory=dict)  # which nodes stay FP32 / were quantized, tool versions

    def to_dict(self) -> dict[str, Any]:
        """Manifest form (the ``variants.<precision>`` entry without its verification report)."""
        return {"graphs": dict(self.graphs), "plan": self.plan}
