"""The one small backend interface the greedy loop is written against, and its lifecycle."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])

#: The calls that use what ``close`` frees; :class:`Lifecycle` guards them in every subclass.
GUARDED = ("encode", "step", "keep", "step_logits", "reorder")


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
        """Keep only ``rows`` (indices into the current batch; may repeat, to give an image several rows)."""


class LogitsBackend(Backend, Protocol):
    """A backend that beam search and sampling can run on: logits out, cache rows reordered in place."""

    def step_logits(self, state: Any, tokens: np.ndarray, position: int) -> np.ndarray:
        """Like ``step`` but returns the float32 logits (B, vocab)."""

    def reorder(self, state: Any, rows: np.ndarray, length: int) -> None:
        """Row i's cache slots ``[0, length)`` become those of row ``rows[i]`` (same batch size; rows of the
        same image, so the cross-attention tables stay)."""


def require_logits(backend: Any, mode: str) -> None:
    """Raise :class:`BackendUnavailable` unless ``backend`` gives logits and reorders its cache."""
    if not (callable(getattr(backend, "step_logits", None)) and callable(getattr(backend, "reorder", None))):
        raise BackendUnavailable(f"{mode} needs a backend that returns logits; the {getattr(backend, 'name', '?')} "
                                 "backend returns only next ids (use an onnxruntime backend)")

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


class _Calls:
    """The calls in flight on one backend, per thread, and the condition ``close`` waits on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.by_thread: dict[int, int] = {}


def guarded(method: F) -> F:
    """Run ``method`` only on an open backend, counted as a call in flight so that ``close`` waits for it."""

    @functools.wraps(method)
    def call(self: Lifecycle, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._leave()

    call._guarded = True  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]


class Lifecycle:
    """``close()`` and ``with backend:`` for every backend; each frees what it holds in ``_release``.

    The open/closed state lives here once: every subclass's ``encode``, ``step`` and ``keep`` is
    wrapped (as Polygraphy's runners wrap ``infer_impl``), so a closed backend refuses them with
    :class:`BackendClosed`, and ``close()`` marks the backend closed, waits for the calls already
    running on other threads, then releases. A thread describing while another closes therefore
    gets its results or ``BackendClosed``, never a failure inside a released session. Closing
    twice is harmless (the second call returns at once).
    """

    name = "backend"
    closed = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in GUARDED:
            method = cls.__dict__.get(attr)
            if callable(method) and not getattr(method, "_guarded", False):
                setattr(cls, attr, guarded(method))

    @property
    def _calls(self) -> _Calls:
        # Created on first use: subclasses need not call a base __init__ (and tests build some with __new__).
        # dict.setdefault is atomic, so two threads racing here still share one _Calls.
        return self.__dict__.setdefault("_calls_state", _Calls())

    def _enter(self) -> None:
        calls, me = self._calls, threading.get_ident()
        with calls.cond:
            self._check_open()
            calls.by_thread[me] = calls.by_thread.get(me, 0) + 1

    def _leave(self) -> None:
        calls, me = self._calls, threading.get_ident()
        with calls.cond:
            left = calls.by_thread.pop(me) - 1
            if left:
                calls.by_thread[me] = left
            calls.cond.notify_all()

    def close(self) -> None:
        """Refuse new calls, wait for the ones in flight on other threads, then free what the backend holds."""
        calls, me = self._calls, threading.get_ident()
        with calls.cond:
            if self.closed:
                return
            self.closed = True
            # this thread's own calls (a close from inside a call) cannot finish first: do not wait for them
            calls.cond.wait_for(lambda: not any(t != me for t in calls.by_thread))
        self._release()

    def _release(self) -> None:
        """Drop what the backend holds (sessions, engines, device memory)."""

    def _check_open(self) -> None:
        """Raise :class:`BackendClosed` if the backend is closed (the guarded calls do this already)."""
        if self.closed:
            raise BackendClosed(f"the {self.name} backend is closed; create a new one (or a new Describer)")

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
