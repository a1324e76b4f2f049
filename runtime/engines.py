"""The manifest's ``engines`` list: compiled forms of the graphs (TensorRT plans, CoreML packages).

One schema for both, written by ``export/trt.py`` and ``export/coreml.py`` and read by the
runtime's ``tensorrt`` and ``coreml`` backends. An engine is tied to where it was built:
a TensorRT plan runs only under the TensorRT version and on the GPU architecture (compute
capability) it was built for; :func:`mismatch` says why one does not fit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FORMATS = ("tensorrt-plan", "coreml-mlpackage")


@dataclass(frozen=True)
class Engine:
    """One compiled graph in the bundle.

    ``target``: where it runs (TensorRT: ``tensorrt`` version, ``gpu`` name, ``compute_capability``
    "major.minor"; CoreML: ``coremltools`` version, ``minimum_deployment_target``).
    ``build``: how it was built (flags, optimisation profiles, FP32 layers of the precision plan).
    ``io``: input/output names -> {dtype, shape} as the engine sees them.
    """

    format: str
    graph: str  # the ONNX graph it was built from (encoder, decoder)
    file: str
    precision: str  # fp32, fp16
    sha256: str
    bytes: int
    target: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    io: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Engine":
        """Parse a manifest entry; a ValueError names what is wrong."""
        missing = [k for k in ("format", "graph", "file", "precision", "sha256", "bytes") if k not in d]
        if missing:
            raise ValueError(f"engine entry {d.get('file', '?')}: missing {', '.join(missing)}")
        if d["format"] not in FORMATS:
            raise ValueError(f"engine entry {d['file']}: unknown format {d['format']!r} (known: {', '.join(FORMATS)})")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return asdict(self)


def parse_engines(entries: list[dict[str, Any]] | None) -> list[Engine]:
    """The manifest's ``engines`` list, parsed."""
    return [Engine.from_dict(e) for e in entries or []]


def mismatch(engine: Engine, tensorrt_version: str, compute_capability: str) -> str | None:
    """Why a TensorRT plan cannot run here (None when it can): plans are tied to the TensorRT
    version and the GPU architecture they were built with."""
    built = engine.target
    if built.get("tensorrt") != tensorrt_version:
        return f"{engine.file} was built with TensorRT {built.get('tensorrt')}, this is {tensorrt_version}"
    if built.get("compute_capability") != compute_capability:
        return (f"{engine.file} was built for compute capability {built.get('compute_capability')} "
                f"({built.get('gpu')}), this GPU is {compute_capability}")
    return None


def select(engines: list[Engine], fmt: str, precision: str, graphs: tuple[str, ...]) -> dict[str, Engine]:
    """Graph name -> engine of format ``fmt`` in ``precision``, for each of ``graphs`` that has one."""
    out = {}
    for e in engines:
        if e.format == fmt and e.precision == precision and e.graph in graphs:
            out[e.graph] = e
    return out
