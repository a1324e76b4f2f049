"""Backend choice: ``auto`` = tensorrt > onnxruntime-cuda > coreml > onnxruntime-cpu (docs/architecture.md, "The runtime")."""

from __future__ import annotations

import logging
from typing import Any

from ..bundle import Bundle
from .base import Backend, BackendClosed, BackendUnavailable

log = logging.getLogger(__name__)

NAMES = ("auto", "tensorrt", "onnxruntime-cuda", "coreml", "onnxruntime-cpu")
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "coreml", "onnxruntime-cpu")
# Absent hardware or packages is the normal case for these: skipped without a warning (an engine
# built for another GPU or TensorRT version is not: tensorrt.EngineMismatch warns once).
QUIET = ("tensorrt", "onnxruntime-cuda", "coreml")


def create_backend(name: str, bundle: Bundle, **options: Any) -> Backend:
    """Instantiate a backend by name; ``auto`` tries each of ``AUTO_ORDER`` and falls back with a warning."""
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(NAMES)}")
    bundle.check_precision(options.get("precision", "fp32"))
    if name != "auto":
        return _create(name, bundle, **options)
    reasons = []
    for candidate in AUTO_ORDER:
        try:
            return _create(candidate, bundle, **options)
        except BackendUnavailable as e:
            reasons.append(f"{candidate}: {e}")
            from .tensorrt import EngineMismatch, warn_once

            if isinstance(e, EngineMismatch):
                warn_once(f"backend {candidate} unavailable ({e}); falling back to ONNX Runtime")
            elif candidate not in QUIET:
                log.warning("backend %s unavailable (%s); trying the next one", candidate, e)
            else:
                log.debug("backend %s unavailable (%s)", candidate, e)
    raise BackendUnavailable("no backend could be started: " + "; ".join(reasons))


def _create(name: str, bundle: Bundle, **options: Any) -> Backend:
    precision = options.get("precision", "fp32")
    if name in ("onnxruntime-cpu", "onnxruntime-cuda"):
        from .ort import ort_backend

        return ort_backend(bundle, device=name.split("-")[1], **options)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(bundle, precision=precision)
    if name == "coreml":
        from .coreml import CoreMLBackend

        return CoreMLBackend(bundle, precision=precision)
    raise ValueError(f"unknown backend {name!r}")


__all__ = ["AUTO_ORDER", "NAMES", "Backend", "BackendClosed", "BackendUnavailable", "create_backend"]
