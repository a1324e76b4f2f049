"""How sure the model is, measured: calibration (ECE) of the attribute heads' probabilities and what abstention
does to the precision and coverage of the stated attributes (``pvlm-eval``'s ``confidence`` section).

Descriptions carry calibrated probabilities (``attributes["probabilities"]``); the uncalibrated ones are
recovered from them with the bundle's temperature undone (``p_raw`` is proportional to ``p ** T``), so ECE
before and after come from the same run. Abstention at a threshold keeps a stated value whose probability
(``attributes["confidence"]``) is at least the threshold, and values the heads cannot judge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runtime.attribute_schema import FIELD
from runtime.calibration import (
    DEFAULT_BINS,
    apply_temperature,
    expected_calibration_error,
    reliability,
)

from .quality import attribute_correct, normalize_attribute

THRESHOLDS: tuple[float, ...] = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def head_target(key: str, expected: Any) -> str | None:
    """The head value a normalised ground truth names (``none`` for no headwear or nothing carried), or None."""
    if isinstance(expected, list):
        return expected[0] if len(expected) == 1 else ("none" if not expected else None)
    if expected is None:
        return "none" if "none" in FIELD[key].drawn else None
    return expected


def _stated(key: str, attrs: Mapping[str, Any]) -> tuple[bool, float | None]:
    """Whether the description states ``key`` (a value, or "none" backed by the heads) and that value's probability."""
    if key in attrs.get("abstained", ()):
        return False, None
    p = (attrs.get("confidence") or {}).get(key)
    value = normalize_attribute(key, attrs.get(key))
    return (value not in (None, []) or p is not None), p


def field_calibration(heads: Any, predicted: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]],
                      categories: Sequence[str], bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Per scored head field: labelled images, the bundle's temperature, ECE before and after it, reliability bins."""
    out: dict[str, Any] = {}
    for f in heads.fields:
        if f.name not in categories:
            continue
        rows, targets = [], []
        for p, e in zip(predicted, expected):
            dist, target = (p.get("probabilities") or {}).get(f.name), head_target(f.name, e.get(f.name))
            if dist and target in f.values:
                rows.append([dist.get(v, 0.0) for v in f.values])
                targets.append(f.values.index(target))
        if not rows:
            continue
        after, t = np.asarray(rows, np.float64), np.asarray(targets)
        before = apply_temperature(after, 1.0 / f.temperature)  # p_raw ~ p ** T
        out[f.name] = {"n": len(t), "temperature": f.temperature,
                       "ece_before": expected_calibration_error(before, t, bins),
                       "ece_after": expected_calibration_error(after, t, bins),
                       "reliability_after": reliability(after, t, bins)}
    return out


def abstention_curve(predicted: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]],
                     sources: Sequence[Mapping[str, str]], categories: Sequence[str],
                     thresholds: Sequence[float] = THRESHOLDS) -> list[dict[str, Any]]:
    """Per threshold: coverage (stated / scorable attributes) and precision (right / stated), over every scored
    category together and per category."""
    curve = []
    for th in thresholds:
        per: dict[str, list[int]] = {k: [0, 0, 0] for k in categories}  # scorable, stated, right
        for p, e, s in zip(predicted, expected, sources):
            for k in categories:
                ok = attribute_correct(k, p.get(k), e.get(k), s.get(k, "label"))
                if ok is None:
                    continue
                said, conf = _stated(k, p)
                per[k][0] += 1
                if said and (conf is None or conf >= th):
                    per[k][1] += 1
                    per[k][2] += ok
        total = [sum(v[i] for v in per.values()) for i in range(3)]
        curve.append({"threshold": th, **_rates(*total),
                      "categories": {k: _rates(*v) for k, v in per.items() if v[0]}})
    return curve


def _rates(scorable: int, stated: int, right: int) -> dict[str, Any]:
    return {"scorable": scorable, "stated": stated, "right": right,
            "coverage": stated / scorable if scorable else None, "precision": right / stated if stated else None}


def confidence_report(heads: Any, predicted: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]],
                      sources: Sequence[Mapping[str, str]], categories: Sequence[str],
                      min_confidence: float = 0.0) -> dict[str, Any]:
    """``pvlm-eval``'s ``confidence`` section; ``{"available": False, ...}`` for a bundle without attribute heads."""
    if heads is None:
        return {"available": False, "reason": "the bundle's encoder has no attribute heads"}
    thresholds = sorted(set(THRESHOLDS) | {min_confidence})
    return {"available": True, "min_confidence": min_confidence, "bins": DEFAULT_BINS,
            "calibration_source": heads.calibration.get("source"),
            "fields": field_calibration(heads, predicted, expected, categories),
            "abstention": abstention_curve(predicted, expected, sources, categories, thresholds)}


def confidence_lines(section: Mapping[str, Any]) -> list[str]:
    """The console summary of the ``confidence`` section: ECE per field, reliability, precision/coverage."""
    if not section.get("available"):
        return [f"attribute confidence: not measured ({section.get('reason')})"]
    lines = [(f"attribute heads calibration (ECE over {section['bins']} bins; temperatures fitted on "
             f"{section['calibration_source']})"), (f"  {'':<12} {'n':>5}  {'T':>6}  {'ECE before':>10}  {'after':>7}  "
             "reliability after (confidence -> accuracy, n)")]
    for name, f in section["fields"].items():
        bins = ", ".join(f"{b['confidence']:.2f}->{b['accuracy']:.2f} ({b['n']})" for b in f["reliability_after"][-3:])
        lines.append(f"  {name:<12} {f['n']:>5}  {f['temperature']:>6.3f}  {f['ece_before']:>10.4f}  "
                     f"{f['ece_after']:>7.4f}  {bins}")
    lines += ["", "abstention: stated attributes below the threshold become unknown",
              f"  {'threshold':>9}  {'coverage':>8}  {'precision':>9}  stated/scorable"]
    for row in section["abstention"]:
        mark = "  <- --min-confidence" if row["threshold"] == section["min_confidence"] else ""
        lines.append(f"  {row['threshold']:>9.2f}  {_pct(row['coverage']):>8}  {_pct(row['precision']):>9}  "
                     f"{row['stated']}/{row['scorable']}{mark}")
    return lines


def _pct(v: Any) -> str:
    return f"{v:.1%}" if isinstance(v, float) else "n/a"


__all__ = ["THRESHOLDS", "abstention_curve", "confidence_lines", "confidence_report", "field_calibration",
           "head_target"]
