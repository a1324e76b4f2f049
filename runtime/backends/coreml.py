"""CoreML backend (macOS on Apple silicon): the bundle's ``.mlpackage``s from ``pvlm-export coreml``.

The KV cache is a plain input/output of the decoder step (as in ``decoder.onnx``), so the
host-cache loop of ``HostCacheBackend`` drives it: the runtime stores each step's
``new_k``/``new_v`` in its numpy cache. coremltools is imported when the backend starts.
Its tests run only on macOS arm64; nothing here has run on a Mac yet.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..engines import select
from .base import BackendUnavailable
from .host_cache import HostCacheBackend

GRAPHS = ("encoder", "decoder")


def on_apple_silicon() -> bool:
    """True on macOS arm64, the only place CoreML models run."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


class CoreMLBackend(HostCacheBackend):
    """Encoder and decoder-step ML programs through ``coremltools.models.MLModel`` (compute units: all)."""

    name = "coreml"

    def __init__(self, bundle: Bundle, precision: str = "fp16", **_options: Any):
        """``precision``: the packages' compute precision (``pvlm-export coreml --precision``)."""
        if not on_apple_silicon():
            raise BackendUnavailable(f"CoreML runs on macOS arm64 only (this is {sys.platform} {platform.machine()})")
        packages = select(bundle.engines, "coreml-mlpackage", precision, GRAPHS)
        if set(packages) != set(GRAPHS):
            raise BackendUnavailable(f"{bundle.root}: no {precision} CoreML packages (pvlm-export coreml "
                                     f"--precision {precision} BUNDLE)")
        try:
            import coremltools as ct
        except ImportError:
            raise BackendUnavailable("coremltools is not installed: pip install 'coremltools>=9'") from None
        bundle.verify([p.file for p in packages.values()])
        self._models = {g: ct.models.MLModel(str(bundle.root / p.file), compute_units=ct.ComputeUnit.ALL)
                        for g, p in packages.items()}
        self.precision = precision
        heads = bundle.manifest.attribute_heads
        self._heads = heads.output if heads is not None else None
        super().__init__(bundle.model_config)

    def run_encoder(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        """float32 (B, 3, H, W) -> cross_k, cross_v[, attributes] as float32 (the last from packages with heads)."""
        out = self._models["encoder"].predict({"pixels": pixels})
        kv = (out["cross_k"].astype(np.float32), out["cross_v"].astype(np.float32))
        return (*kv, out[self._heads].astype(np.float32)) if self._heads in out else kv

    def run_decoder(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoder-step feeds (int64 ids become the package's int32) -> next_ids, new_k, new_v."""
        feeds = {k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in feeds.items()}
        out = self._models["decoder"].predict(feeds)
        return (out["next_ids"].astype(np.int64), out["new_k"].astype(np.float32),
                out["new_v"].astype(np.float32))

    def _release(self) -> None:
        self._models = {}
