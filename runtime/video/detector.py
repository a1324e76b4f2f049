"""Person detectors for videos without a tracks file: the interface, a background-subtraction detector
for fixed cameras, and loading the user's own.

A detector is any callable ``frame -> boxes``: ``frame`` is (H, W, 3) uint8 RGB, the result an
(N, 5) float array of ``x0, y0, x1, y1, score`` in frame pixels (score in [0, 1]).

:class:`BackgroundDetector` needs no weights: it finds what moves against a still background. It is
only as good as that idea: it needs a fixed camera, finds any moving thing (a car, a swaying branch,
a shadow), merges people who walk close together into one box, splits a person whose clothes match
the background, and misses whoever stands still long enough to become background.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

import numpy as np


class Detector(Protocol):
    """``frame`` (H, W, 3) uint8 RGB -> (N, 5) float ``x0, y0, x1, y1, score``."""

    def __call__(self, frame: np.ndarray) -> np.ndarray: ...


class BackgroundDetector:
    """Moving-person detector for a fixed camera: the per-pixel median of recent frames is the background,
    pixels far from it are foreground, and each tall enough blob of foreground is a box.

    ``fps``: the video's frame rate; ``history_s``: the median is over ``samples`` frames spread over this
    many seconds (whoever stays still longer becomes background); ``scale``: frames are shrunk by this
    integer factor first (speed); ``threshold``: grey-level distance (max over channels) that counts as
    foreground; ``min_height``: boxes shorter than this share of the frame's height are dropped;
    ``aspect``: (min, max) height/width of a person-like box.
    """

    def __init__(self, *, fps: float = 25.0, history_s: float = 3.0, samples: int = 9, scale: int = 2,
                 threshold: float = 30.0, min_height: float = 0.12, aspect: tuple[float, float] = (0.8, 8.0)) -> None:
        if scale < 1 or samples < 1 or not fps > 0 or not history_s > 0:
            raise ValueError("fps and history_s must be > 0, samples and scale >= 1")
        self.scale, self.history = scale, samples
        self.every = max(1, round(history_s * fps / samples))
        self.threshold, self.min_height, self.aspect = threshold, min_height, aspect
        self._frames: list[np.ndarray] = []
        self._background: np.ndarray | None = None
        self._count = 0

    def _update(self, small: np.ndarray) -> None:
        if self._count % self.every == 0:
            self._frames = [*self._frames[-(self.history - 1):], small] if self.history > 1 else [small]
            self._background = np.median(np.stack(self._frames), axis=0).astype(np.int16)
        self._count += 1

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        s = self.scale
        small = frame[::s, ::s].astype(np.int16)
        self._update(small)
        if len(self._frames) < min(3, self.history):  # no background yet
            return np.zeros((0, 5), np.float32)
        diff = np.abs(small - self._background).max(axis=2)
        mask = diff > self.threshold
        mask = ndimage.binary_opening(mask, np.ones((2, 2), bool))
        mask = ndimage.binary_closing(mask, np.ones((5, 3), bool))
        labels, _ = ndimage.label(mask)
        boxes = []
        h = frame.shape[0]
        for i, sl in enumerate(ndimage.find_objects(labels), 1):
            if sl is None:
                continue
            y0, y1, x0, x1 = sl[0].start * s, sl[0].stop * s, sl[1].start * s, sl[1].stop * s
            bh, bw = y1 - y0, x1 - x0
            if bh < self.min_height * h or not self.aspect[0] <= bh / max(bw, 1) <= self.aspect[1]:
                continue
            fill = float((labels[sl] == i).mean())
            boxes.append((x0, y0, x1, y1, min(1.0, 0.3 + fill)))
        return np.array(boxes, np.float32).reshape(-1, 5)


def load_detector(spec: str, fps: float = 25.0) -> Detector:
    """``background`` (:class:`BackgroundDetector` for a video of ``fps``), or ``MODULE:NAME`` importing the user's
    own: ``NAME`` is a detector, or a class or function that returns one when called with no arguments."""
    if spec == "background":
        return BackgroundDetector(fps=fps)
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"--detector: expected 'background' or MODULE:NAME (a Python detector), got {spec!r}")
    try:
        obj = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        raise ValueError(f"--detector {spec}: no module {e.name!r} (is it on PYTHONPATH?)") from None
    except AttributeError:
        raise ValueError(f"--detector {spec}: module {module!r} has no {name!r}") from None
    if isinstance(obj, type) or _is_factory(obj):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"--detector {spec}: {name!r} is not callable")
    return obj


def _is_factory(obj: Callable) -> bool:
    import inspect

    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return not any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in
                   params.values())


def check_detections(boxes: object, where: str) -> np.ndarray:
    """A detector's result as (N, 5) float32; ValueError naming ``where`` when it is not that shape."""
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 5), np.float32)
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise ValueError(f"{where} returned shape {arr.shape}; a detector returns (N, 5) x0, y0, x1, y1, score")
    if arr.shape[1] == 4:
        arr = np.hstack([arr, np.ones((len(arr), 1), np.float32)])
    keep = np.isfinite(arr).all(axis=1) & (arr[:, 2] > arr[:, 0]) & (arr[:, 3] > arr[:, 1])
    return arr[keep]


__all__ = ["BackgroundDetector", "Detector", "check_detections", "load_detector"]
