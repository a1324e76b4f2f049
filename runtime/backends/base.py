"""The one small backend interface the greedy loop is written against."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    """Runs the two graphs; owns the per-batch buffers (cross K/V, self-attention cache).

    ``encode`` returns an opaque per-batch state so one backend serves many threads at once.
    """

    name: str

    def encode(self, pixels: np.ndarray, capacity: int) -> Any:
        """Run the encoder on float32 (B, 3, H, W); allocate a cache of ``capacity`` slots."""

    def step(self, state: Any, tokens: np.ndarray, position: int) -> np.ndarray:
        """One decoder step for int64 tokens (B, 1) at ``position``; returns next ids (B,) int64."""

    def keep(self, state: Any, rows: np.ndarray) -> None:
        """Drop finished rows: keep only ``rows`` (indices into the current batch)."""


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""
