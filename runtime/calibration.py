"""Temperature scaling of the attribute heads' probabilities, and how calibrated they are (numpy only).

One temperature per field (Guo et al., 2017): ``softmax(log p / T)`` with ``T`` chosen to minimise the negative
log-likelihood of the true values on held-out data. ``T > 1`` softens an over-confident head, ``T < 1``
sharpens an under-confident one; the argmax never changes, so accuracy does not either.

Expected calibration error (ECE): the top value's confidence is binned (equal-width bins over [0, 1]); ECE is
the mean over images of ``|accuracy - confidence|`` of each image's bin, i.e. the bin gaps weighted by bin size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DEFAULT_BINS = 15
_TINY = 1e-30  # floor under probabilities before the log (a float32 softmax can underflow to 0)
_LOG_T_RANGE = (math.log(0.05), math.log(20.0))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (..., K) rescaled as ``softmax(log p / T)``; T = 1 returns them unchanged (float64 copy)."""
    p = np.asarray(probs, np.float64)
    if temperature == 1.0:
        return p.copy()
    z = np.log(np.maximum(p, _TINY)) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of ``targets`` (N,) int under ``probs`` (N, K)."""
    if len(targets) == 0:
        return float("nan")
    picked = np.asarray(probs, np.float64)[np.arange(len(targets)), targets]
    return float(-np.log(np.maximum(picked, _TINY)).mean())


def fit_temperature(probs: np.ndarray, targets: np.ndarray, iterations: int = 60) -> float:
    """The temperature in [0.05, 20] that minimises the NLL of ``targets`` (N,) under ``probs`` (N, K).

    The NLL of temperature scaling is convex in 1/T, so a golden-section search over log T finds its minimum;
    no labelled rows gives 1.0.
    """
    if len(targets) == 0:
        return 1.0
    logp = np.log(np.maximum(np.asarray(probs, np.float64), _TINY))

    def loss(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float((lse - z[np.arange(len(targets)), targets]).mean())

    lo, hi = _LOG_T_RANGE
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    best = (lo + hi) / 2
    return round(math.exp(best), 4) if loss(best) <= loss(0.0) else 1.0


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = DEFAULT_BINS) -> list[dict[str, Any]]:
    """Per confidence bin (equal width over [0, 1]) with images in it: its range, count, mean confidence and
    accuracy of the top value."""
    p = np.asarray(probs, np.float64)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    correct = pred == np.asarray(targets)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            out.append({"low": b / bins, "high": (b + 1) / bins, "n": int(sel.sum()),
                        "confidence": float(conf[sel].mean()), "accuracy": float(correct[sel].mean())})
    return out


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = DEFAULT_BINS) -> float | None:
    """ECE of the top value over ``bins`` equal-width bins; None without labelled rows."""
    n = len(targets)
    if n == 0:
        return None
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in reliability(probs, targets, bins)) / n)


def calibration_summary(probs: np.ndarray, targets: np.ndarray, temperature: float,
                        bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """One field's figures before and after ``temperature``: n, accuracy, NLL, ECE, and the reliability bins after."""
    after = apply_temperature(probs, temperature)
    n = len(targets)
    acc = float((np.asarray(probs).argmax(axis=1) == targets).mean()) if n else None
    return {"n": n, "temperature": temperature, "accuracy": acc,
            "nll_before": _round(nll(probs, targets)), "nll_after": _round(nll(after, targets)),
            "ece_before": _round(expected_calibration_error(probs, targets, bins)),
            "ece_after": _round(expected_calibration_error(after, targets, bins)),
            "reliability_after": [{k: _round(v) for k, v in b.items()} for b in reliability(after, targets, bins)]}


def _round(value: Any, digits: int = 5) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    return value


__all__ = ["DEFAULT_BINS", "apply_temperature", "calibration_summary", "expected_calibration_error", "fit_temperature",
           "nll", "reliability"]
