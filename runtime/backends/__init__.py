"""Backend choice: ``auto`` = onnxruntime-cuda > onnxruntime-cpu (TensorRT and CoreML will slot in first)."""

from __future__ import annotations

import logging
from typing import Any

from ..bundle import Bundle
from .base import Backend, BackendUnavailable

log = logging.getLogger(__name__)

NAMES = ("auto", "onnxruntime-cpu", "onnxruntime-cuda")
AUTO_ORDER = ("onnxruntime-cuda", "onnxruntime-cpu")


def create_backend(name: str, bundle: Bundle, **options: Any) -> Backend:
    """Instantiate a backend by name; ``auto`` tries each of ``AUTO_ORDER`` and falls back with a warning."""
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(NAMES)}")
    if name != "auto":
        return _create(name, bundle, **options)
    reasons = []
    for candidate in AUTO_ORDER:
        try:
            return _create(candidate, bundle, **options)
        except BackendUnavailable as e:
            reasons.append(f"{candidate}: {e}")
            if candidate != "onnxruntime-cuda":  # no GPU is the normal case, not worth a warning
                log.warning("backend %s unavailable (%s); trying the next one", candidate, e)
    raise BackendUnavailable("no backend could be started: " + "; ".join(reasons))


def _create(name: str, bundle: Bundle, **options: Any) -> Backend:
    if name in ("onnxruntime-cpu", "onnxruntime-cuda"):
        from .ort import ort_backend

        return ort_backend(bundle, device=name.split("-")[1], **options)
    raise ValueError(f"unknown backend {name!r}")


__all__ = ["AUTO_ORDER", "NAMES", "Backend", "BackendUnavailable", "create_backend"]
