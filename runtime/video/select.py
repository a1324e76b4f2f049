"""Which crops of a track to describe: each sampled box gets a quality score, and a bounded pool per track
keeps the best crop of each stretch of its life.

The score, in [0, 1], is the product of four measured factors:

- size: the crop's height against the model's input height (capped at 1): a small crop is upscaled and
  loses detail;
- sharpness: the variance of the Laplacian of the crop in grey levels, at the model's input size,
  mapped to [0, 1) by ``v / (v + SHARPNESS_HALF)``: blur and low resolution both lower it;
- visibility: the share of the box inside the frame (squared), and 0.5 for a box touching the frame's
  edge (it is probably cut there);
- occlusion: 1 minus the share of the box covered by the other boxes of the frame (capped at 0.9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]

SHARPNESS_HALF = 60.0  # Laplacian variance (grey levels squared) that scores 0.5
EDGE_MARGIN = 1.0  # pixels: a box this close to the frame's edge counts as cut by it
SHARPNESS_HEIGHT = 128  # the crop is measured at most this tall (the measure's cost, not its meaning)


@dataclass(frozen=True)
class Quality:
    """How good a crop is to describe, and why (see the module's docstring)."""

    size: float
    sharpness: float  # Laplacian variance, grey levels squared
    visible: float  # share of the box inside the frame
    occluded: float  # share of the box covered by other boxes
    edge: bool  # the box touches the frame's edge
    score: float

    def as_dict(self) -> dict[str, float | bool]:
        """The factors rounded for a JSON line."""
        return {"score": round(self.score, 4), "size": round(self.size, 4), "sharpness": round(self.sharpness, 1),
                "visible": round(self.visible, 4), "occluded": round(self.occluded, 4), "edge": self.edge}


@dataclass(frozen=True)
class Candidate:
    """One sampled crop of a track: RGB uint8 (h, w, 3) pixels, the frame (0-based) and time it came from."""

    frame: int
    timestamp: float
    box: Box  # clipped to the frame
    crop: np.ndarray
    quality: Quality


def clip(box: Sequence[float], width: int, height: int) -> tuple[Box, float] | None:
    """``box`` clipped to the frame and the share of its area inside; None when nothing of it is inside."""
    x0, y0, x1, y1 = (float(v) for v in box)
    area = (x1 - x0) * (y1 - y0)
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    if cx1 - cx0 < 1 or cy1 - cy0 < 1 or area <= 0:
        return None
    return (cx0, cy0, cx1, cy1), (cx1 - cx0) * (cy1 - cy0) / area


def touches_edge(box: Box, width: int, height: int) -> bool:
    """Whether a (clipped) box reaches the frame's edge."""
    x0, y0, x1, y1 = box
    return x0 <= EDGE_MARGIN or y0 <= EDGE_MARGIN or x1 >= width - EDGE_MARGIN or y1 >= height - EDGE_MARGIN


def occlusion(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> (N,) share of each box covered by the others (pairwise overlaps summed, capped at 1)."""
    n = len(boxes)
    if n < 2:
        return np.zeros(n)
    x0 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y0 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x1 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y1 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    np.fill_diagonal(inter, 0.0)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-9)
    return np.minimum(inter.sum(axis=1) / area, 1.0)


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a 2-D float image (0 for one smaller than 3x3)."""
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = (4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:])
    return float(lap.var())


def sharpness(crop: np.ndarray, model_size: tuple[int, int]) -> float:
    """Laplacian variance of an RGB crop in grey levels, resized as the model sees it (at most
    :data:`SHARPNESS_HEIGHT` tall, keeping the model's aspect)."""
    from PIL import Image

    mh, mw = model_size
    h = min(mh, SHARPNESS_HEIGHT)
    w = max(3, round(mw * h / mh))
    gray = Image.fromarray(crop).convert("L").resize((w, h), Image.BILINEAR)
    return laplacian_variance(np.asarray(gray, dtype=np.float32))


def score(size: float, sharp: float, visible: float, occluded: float, edge: bool) -> float:
    """The quality score in [0, 1] from its factors (see the module's docstring)."""
    s = min(1.0, size) * (sharp / (sharp + SHARPNESS_HALF)) * visible ** 2 * (1.0 - min(occluded, 0.9))
    return s * (0.5 if edge else 1.0)


def upper_bound(size: float, visible: float, occluded: float, edge: bool) -> float:
    """The best score a crop could get whatever its sharpness: cheaper crops are skipped by it."""
    return min(1.0, size) * visible ** 2 * (1.0 - min(occluded, 0.9)) * (0.5 if edge else 1.0)


class CandidatePool:
    """The best candidate of each stretch of a track's life, at most ``capacity`` of them.

    Stretches start ``bucket_s`` long; when a track outlives ``capacity`` of them, neighbours merge
    (the better candidate stays) and the stretch doubles, so the pool covers the whole life evenly in
    bounded memory.
    """

    def __init__(self, capacity: int = 12, bucket_s: float = 0.5) -> None:
        if capacity < 1 or not bucket_s > 0:
            raise ValueError(f"capacity must be >= 1 and bucket_s > 0, got {capacity}, {bucket_s}")
        self.capacity, self.bucket_s = capacity, bucket_s
        self.origin: float | None = None
        self.best: dict[int, Candidate] = {}

    def _bucket(self, t: float) -> int:
        return int(math.floor((t - (self.origin or 0.0)) / self.bucket_s))

    def wants(self, timestamp: float, bound: float) -> bool:
        """Whether a candidate at ``timestamp`` scoring at most ``bound`` could enter the pool."""
        if self.origin is None:
            return True
        held = self.best.get(self._bucket(timestamp))
        return held is None or bound > held.quality.score

    def offer(self, c: Candidate) -> None:
        """Keep ``c`` if it is the best of its stretch so far."""
        if self.origin is None:
            self.origin = c.timestamp
        b = self._bucket(c.timestamp)
        held = self.best.get(b)
        if held is None or c.quality.score > held.quality.score:
            self.best[b] = c
        while len(self.best) > self.capacity:
            self.bucket_s *= 2
            merged: dict[int, Candidate] = {}
            for k, cand in self.best.items():
                k2 = k // 2
                if k2 not in merged or cand.quality.score > merged[k2].quality.score:
                    merged[k2] = cand
            self.best = merged

    def __len__(self) -> int:
        return len(self.best)

    def choose(self, k: int) -> list[Candidate]:
        """Up to ``k`` candidates spread over the pool's time span: the best of each of ``k`` equal parts,
        then the best of the rest while parts were empty; in time order."""
        cands = sorted(self.best.values(), key=lambda c: c.timestamp)
        if len(cands) <= k:
            return cands
        t0, t1 = cands[0].timestamp, cands[-1].timestamp
        span = max(t1 - t0, 1e-9)
        parts: dict[int, Candidate] = {}
        for c in cands:
            p = min(k - 1, int((c.timestamp - t0) / span * k))
            if p not in parts or c.quality.score > parts[p].quality.score:
                parts[p] = c
        chosen = list(parts.values())
        rest = sorted((c for c in cands if all(c is not x for x in chosen)), key=lambda c: -c.quality.score)
        chosen += rest[: k - len(chosen)]
        return sorted(chosen, key=lambda c: c.timestamp)


__all__ = ["Candidate", "CandidatePool", "Quality", "clip", "laplacian_variance", "occlusion", "score", "sharpness",
           "touches_edge", "upper_bound"]
