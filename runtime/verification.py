"""What export measured before it wrote a bundle: the manifest's ``verification`` section, typed.

``export.validate`` fills these records and ``runtime.bundle.Manifest.verification`` reads
them back (torch-free), so the writer and every reader (the export CLI, the model card,
the quickstart) share one shape. Each decoder graph gets the same :class:`GraphParity`
record. The JSON keeps the layout bundles have always had: the portable decoder's figures
at the top of ``parity``, ``decoder_ort``'s nested under its name (``null`` when the bundle
has no such graph). A precision variant's own verification (``variants.<precision>.verification``)
is a :class:`VariantReport`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PORTABLE = "decoder"  # the graph whose figures sit at the top of the JSON ``parity`` object
NESTED = ("decoder_ort",)  # graphs recorded under their own key inside ``parity``


@dataclass(frozen=True)
class GraphParity:
    """One decoder graph against the PyTorch reference, teacher-forced on its greedy tokens."""

    logits_max_abs_diff: float = 0.0
    steps_compared: int = 0
    sequences_identical: int = 0  # rows whose every step's argmax equalled the reference token
    token_agreement: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {"logits_max_abs_diff": self.logits_max_abs_diff, "steps_compared": self.steps_compared,
                "sequences_identical": self.sequences_identical, "token_agreement": self.token_agreement}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GraphParity":
        """Read the manifest form; missing figures take their defaults."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class ParityReport:
    """ONNX Runtime against PyTorch on the export's parity images; ``decoders``: graph name -> figures."""

    images: int = 0
    batch_sizes: tuple[int, ...] = ()
    encoder_max_abs_diff: float = 0.0
    logits_max_abs: float = 0.0  # largest reference |logit|: the scale rtol applies to
    max_new_tokens: int = 0
    nonfinite: int = 0  # NaN/inf values in encoder outputs or logits (FP16 overflow shows up here)
    decoders: Mapping[str, GraphParity] = field(default_factory=dict)

    @property
    def decoder(self) -> GraphParity:
        """The portable ``decoder.onnx``'s figures (every bundle has that graph)."""
        return self.decoders.get(PORTABLE, GraphParity())

    @property
    def sequence_match_rate(self) -> float:
        """Share of images whose portable-decoder greedy sequence equals PyTorch's."""
        return self.decoder.sequences_identical / max(1, self.images)

    def to_dict(self) -> dict[str, Any]:
        """Manifest form (key order as bundles have always had it)."""
        main = self.decoder
        nested = {name: (g.to_dict() if (g := self.decoders.get(name)) is not None else None) for name in NESTED}
        return {"images": self.images, "batch_sizes": list(self.batch_sizes),
                "encoder_max_abs_diff": self.encoder_max_abs_diff, "logits_max_abs_diff": main.logits_max_abs_diff,
                "logits_max_abs": self.logits_max_abs, "steps_compared": main.steps_compared,
                "sequences_identical": main.sequences_identical, "token_agreement": main.token_agreement,
                "max_new_tokens": self.max_new_tokens, "nonfinite": self.nonfinite, **nested,
                "sequence_match_rate": self.sequence_match_rate}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ParityReport":
        """Read the manifest form; missing figures take their defaults."""
        decoders = {PORTABLE: GraphParity.from_dict(data)}
        decoders.update({name: GraphParity.from_dict(data[name]) for name in NESTED
                         if isinstance(data.get(name), Mapping)})
        return cls(images=data.get("images", 0), batch_sizes=tuple(data.get("batch_sizes") or ()),
                   encoder_max_abs_diff=data.get("encoder_max_abs_diff", 0.0),
                   logits_max_abs=data.get("logits_max_abs", 0.0), max_new_tokens=data.get("max_new_tokens", 0),
                   nonfinite=data.get("nonfinite", 0), decoders=decoders)


@dataclass(frozen=True)
class Verification:
    """The export's checks: what ran, how long exporting took, the parity report (None: not measured), failures."""

    checks: str | None = None
    export_seconds: float | None = None
    parity: ParityReport | None = None
    failures: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {"export_seconds": self.export_seconds, "checks": self.checks,
                "parity": self.parity.to_dict() if self.parity is not None else None, "failures": list(self.failures)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Verification":
        """Read the manifest form; absent parts read as not recorded."""
        parity = data.get("parity")
        return cls(checks=data.get("checks"), export_seconds=data.get("export_seconds"),
                   parity=ParityReport.from_dict(parity) if isinstance(parity, Mapping) else None,
                   failures=tuple(data.get("failures") or ()))


@dataclass(frozen=True)
class Divergence:
    """Where one variant sequence first leaves PyTorch FP32's greedy sequence, and FP32's logits there.

    ``gap``: FP32's top-1 minus top-2 logit. ``margin``: FP32's logit of its own token minus
    its logit of the token the variant chose (the variant's error had to close this much; equal
    to ``gap`` when the variant took FP32's runner-up, larger otherwise).
    """

    image: int
    step: int
    gap: float
    margin: float

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {"image": self.image, "step": self.step, "gap": self.gap, "margin": self.margin}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Divergence":
        """Read the manifest form."""
        return cls(int(data["image"]), int(data["step"]), *(math.nan if data[k] is None else float(data[k])
                                                            for k in ("gap", "margin")))


@dataclass(frozen=True)
class VariantReport:
    """A precision variant against PyTorch FP32: the manifest's ``variants.<precision>.verification``.

    Free-running figures (the runtime's greedy loop in the variant's precision on ``images``
    held-out crops): exact sequences, token and parsed-attribute agreement, each differing
    sequence's :class:`Divergence`. Teacher-forced figures (the variant's graphs fed FP32's
    tokens on the parity images): the worst decoder graph's logits error, the encoder's error,
    non-finite values. ``graphs``: the graphs the variant replaces; ``fallback_fp32``: the
    graphs sent back to FP32 after a first try missed its gate; ``failures``: the gate's lines
    (present in a written bundle only with ``accepted_mismatch``).
    """

    images: int = 0
    seed: int = 0
    max_new_tokens: int = 0
    sequences_identical: int = 0
    token_agreement: float = 1.0
    attribute_agreement: float = 1.0
    attribute_fields: int = 0
    divergences: tuple[Divergence, ...] = ()
    encoder_max_abs_diff: float = 0.0
    logits_max_abs_diff: float = 0.0
    logits_max_abs: float = 0.0
    nonfinite: int = 0
    teacher_forced_sequences_identical: int = 0
    teacher_forced_images: int = 0
    decoder_ort: GraphParity | None = None
    graphs: tuple[str, ...] = ()
    fallback_fp32: tuple[str, ...] = ()
    accepted_mismatch: bool = False
    failures: tuple[str, ...] = ()

    @property
    def sequence_match_rate(self) -> float:
        """Share of images whose variant sequence equals PyTorch FP32's."""
        return self.sequences_identical / max(1, self.images)

    @property
    def confident_divergences(self) -> tuple[Divergence, ...]:
        """Divergences at a margin larger than the variant's teacher-forced logits error: not near-ties."""
        return tuple(d for d in self.divergences if d.margin > self.logits_max_abs_diff)

    @property
    def confident_divergence_rate(self) -> float:
        """Share of images whose sequence diverged confidently."""
        return len(self.confident_divergences) / max(1, self.images)

    def to_dict(self) -> dict[str, Any]:
        """Manifest form (with the derived rates and counts, for readers of the JSON); a non-finite figure
        (an overflowing variant kept with ``--accept-mismatch``) is written as null, as strict JSON has no NaN."""
        return _finite_or_null({"images": self.images, "seed": self.seed, "max_new_tokens": self.max_new_tokens,
                "sequences_identical": self.sequences_identical, "sequence_match_rate": self.sequence_match_rate,
                "token_agreement": self.token_agreement, "attribute_agreement": self.attribute_agreement,
                "attribute_fields": self.attribute_fields,
                "confident_divergences": len(self.confident_divergences),
                "divergences": [d.to_dict() for d in self.divergences],
                "divergence_logit_gaps": sorted(d.gap for d in self.divergences),
                "encoder_max_abs_diff": self.encoder_max_abs_diff, "logits_max_abs_diff": self.logits_max_abs_diff,
                "logits_max_abs": self.logits_max_abs, "nonfinite": self.nonfinite,
                "teacher_forced_sequences_identical": self.teacher_forced_sequences_identical,
                "teacher_forced_images": self.teacher_forced_images,
                "decoder_ort": self.decoder_ort.to_dict() if self.decoder_ort is not None else None,
                "graphs": list(self.graphs), "fallback_fp32": list(self.fallback_fp32),
                "accepted_mismatch": self.accepted_mismatch, "failures": list(self.failures)})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VariantReport":
        """Read the manifest form; missing figures take their defaults (bundles exported before
        divergences were recorded read with none)."""
        data = _null_as_nan(data)
        plain = {k: data[k] for k in ("images", "seed", "max_new_tokens", "sequences_identical", "token_agreement",
                                      "attribute_agreement", "attribute_fields", "encoder_max_abs_diff",
                                      "logits_max_abs_diff", "logits_max_abs", "nonfinite",
                                      "teacher_forced_sequences_identical", "teacher_forced_images",
                                      "accepted_mismatch") if k in data}
        ort = data.get("decoder_ort")
        return cls(**plain, divergences=tuple(Divergence.from_dict(d) for d in data.get("divergences") or ()),
                   decoder_ort=GraphParity.from_dict(ort) if isinstance(ort, Mapping) else None,
                   graphs=tuple(data.get("graphs") or ()), fallback_fp32=tuple(data.get("fallback_fp32") or ()),
                   failures=tuple(data.get("failures") or ()))


# Figures a report writes as null when they are not finite (read back as NaN).
_FLOAT_FIGURES = frozenset({"token_agreement", "attribute_agreement", "encoder_max_abs_diff", "logits_max_abs_diff",
                            "logits_max_abs"})


def _finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float inside it replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


def _null_as_nan(data: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`_finite_or_null` for a report's figures: null floats (and nested ones) read as NaN."""
    out = {k: math.nan if v is None and k in _FLOAT_FIGURES else v for k, v in data.items()}
    if isinstance(out.get("decoder_ort"), Mapping):
        out["decoder_ort"] = _null_as_nan(out["decoder_ort"])
    return out
