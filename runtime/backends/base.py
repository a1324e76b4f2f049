"""The one small backend interface the greedy loop is written against, and its lifecycle."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    """Runs the two graphs; owns the per-batch buffers (cross K/V, self-attention cache).

    ``encode`` returns an opaque per-batch state so one backend serves many threads at once.
    ``close`` frees the sessions, engines and device memory; ``with backend:`` closes on exit.
    """

    name: str

    def encode(self, pixels: np.ndarray, capacity: int) -> Any:
        """Run the encoder on float32 (B, 3, H, W); allocate a cache of ``capacity`` slots."""

    def step(self, state: Any, tokens: np.ndarray, position: int) -> np.ndarray:
        """One decoder step for int64 tokens (B, 1) at ``position``; returns next ids (B,) int64."""

    def keep(self, state: Any, rows: np.ndarray) -> None:
        """Drop finished rows: keep only ``rows`` (indices into the current batch)."""

    def close(self) -> None:
        """Free what the backend holds; afterwards every call raises :class:`BackendClosed`."""

    def __enter__(self) -> Any:
        """The backend itself."""

    def __exit__(self, *exc: object) -> None:
        """Close."""


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


class BackendClosed(RuntimeError):
    """The backend was closed; the message names it."""


class Lifecycle:
    """``close()`` and ``with backend:`` for every backend; each frees what it holds in ``_release``.

    Closing twice is harmless; a closed backend refuses ``encode``/``step``/``keep`` with
    :class:`BackendClosed` instead of failing inside a released session.
    """

    name = "backend"
    closed = False

    def close(self) -> None:
        """Free the backend's sessions, engines and buffers (idempotent)."""
        if not self.closed:
            self.closed = True
            self._release()

    def _release(self) -> None:
        """Drop what the backend holds (sessions, engines, device memory)."""

    def _check_open(self) -> None:
        if self.closed:
            raise BackendClosed(f"the {self.name} backend is closed; create a new one (or a new Describer)")

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
