"""What export measured before it wrote a bundle: the manifest's ``verification`` section, typed.

``export.validate`` fills these records and ``runtime.bundle.Manifest.verification`` reads
them back (torch-free), so the writer and every reader (the export CLI, the model card,
the quickstart) share one shape. Each decoder graph gets the same :class:`GraphParity`
record. The JSON keeps the layout bundles have always had: the portable decoder's figures
at the top of ``parity``, ``decoder_ort``'s nested under its name (``null`` when the bundle
has no such graph).
"""

from __future__ import annotations

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
