"""The text-and-heads combination rule, abstention, and temperature scaling / ECE (numpy only, no bundle)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.attribute_confidence import CombineRule, combine, head_distributions
from runtime.attribute_schema import empty_attributes
from runtime.bundle import AttributeHeads, BundleError, HeadField
from runtime.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability,
)


def _parsed(**values):
    return {**empty_attributes(), **values}


def _dist(top: str, p: float, values: tuple[str, ...]) -> dict[str, float]:
    rest = (1 - p) / (len(values) - 1)
    return {v: (p if v == top else rest) for v in values}


GENDER = ("male", "female")
HEADWEAR = ("none", "cap", "hat", "helmet")
CARRYING = ("none", "backpack", "handbag", "umbrella", "phone", "suitcase")
COLORS = ("red", "blue", "black")


def test_agreeing_text_stands_with_the_heads_probability():
    out = combine(_parsed(gender="male"), {"gender": _dist("male", 0.8, GENDER)})
    assert out["gender"] == "male" and out["confidence"]["gender"] == pytest.approx(0.8)
    assert out["disagreements"] == [] and out["text"]["gender"] == "male" and out["heads"]["gender"] == "male"


def test_silent_text_is_filled_only_by_a_confident_head():
    rule = CombineRule(fill=0.7, override=0.9)
    assert combine(_parsed(), {"gender": _dist("female", 0.75, GENDER)}, rule)["gender"] == "female"
    unsure = combine(_parsed(), {"gender": _dist("female", 0.6, GENDER)}, rule)
    assert unsure["gender"] is None and unsure["confidence"]["gender"] is None


def test_disagreement_is_recorded_and_only_a_confident_head_overrules():
    rule = CombineRule(fill=0.5, override=0.9)
    kept = combine(_parsed(gender="male"), {"gender": _dist("female", 0.8, GENDER)}, rule)
    assert kept["gender"] == "male" and kept["disagreements"] == ["gender"]
    assert kept["confidence"]["gender"] == pytest.approx(0.2)
    overruled = combine(_parsed(gender="male"), {"gender": _dist("female", 0.95, GENDER)}, rule)
    assert overruled["gender"] == "female" and overruled["disagreements"] == ["gender"]


def test_silence_about_headwear_and_carrying_means_none():
    out = combine(_parsed(), {"headwear": _dist("none", 0.9, HEADWEAR), "carrying": _dist("none", 0.8, CARRYING)})
    assert out["headwear"] is None and out["carrying"] == []
    assert out["confidence"] == {"headwear": pytest.approx(0.9), "carrying": pytest.approx(0.8)}
    assert out["disagreements"] == []
    hat = combine(_parsed(), {"headwear": _dist("hat", 0.95, HEADWEAR)})
    assert hat["headwear"] == "hat" and hat["disagreements"] == ["headwear"]


def test_a_carried_list_that_names_the_heads_value_agrees_and_stays_whole():
    out = combine(_parsed(carrying=["phone", "backpack"]), {"carrying": _dist("backpack", 0.97, CARRYING)})
    assert out["carrying"] == ["phone", "backpack"] and out["disagreements"] == []


def test_abstention_reports_unknown_below_the_threshold():
    parsed = _parsed(gender="male", headwear="cap")
    dists = {"gender": _dist("male", 0.7, GENDER), "headwear": _dist("cap", 0.95, HEADWEAR)}
    out = combine(parsed, dists, CombineRule(min_confidence=0.8))
    assert out["gender"] is None and out["headwear"] == "cap" and out["abstained"] == ["gender"]
    assert out["confidence"]["gender"] is None and out["text"]["gender"] == "male"


def test_a_changed_colour_drops_the_texts_shade():
    parsed = _parsed(upper_color="blue", upper_shade="dark")
    out = combine(parsed, {"upper_color": _dist("black", 0.99, COLORS)})
    assert out["upper_color"] == "black" and out["upper_shade"] is None
    same = combine(parsed, {"upper_color": _dist("blue", 0.99, COLORS)})
    assert same["upper_color"] == "blue" and same["upper_shade"] == "dark"


def test_a_value_the_heads_cannot_name_keeps_the_text_and_no_probability():
    out = combine(_parsed(upper="dress"), {"upper": _dist("coat", 0.99, ("coat", "jacket"))},
                  CombineRule(min_confidence=0.9))
    assert out["upper"] == "dress" and out["confidence"]["upper"] is None and out["abstained"] == []


def test_rule_thresholds_are_checked():
    with pytest.raises(ValueError, match="min_confidence"):
        CombineRule(min_confidence=1.5)


def test_head_distributions_apply_each_fields_temperature():
    heads = AttributeHeads("attributes", (HeadField("gender", GENDER, 0, 2.0), HeadField("age", ("adult", "young"), 2)))
    row = np.array([0.9, 0.1, 0.3, 0.7], np.float32)
    d = head_distributions(row, heads)
    assert d["gender"]["male"] == pytest.approx(3 / (3 + 1), abs=1e-5)  # sqrt(0.9) : sqrt(0.1)
    assert d["age"] == {"adult": pytest.approx(0.3), "young": pytest.approx(0.7)}


def test_head_layout_offsets_must_follow_each_other():
    good = {"output": "attributes", "fields": [{"name": "gender", "values": list(GENDER), "offset": 0},
                                               {"name": "age", "values": ["adult", "young"], "offset": 2}]}
    assert AttributeHeads.from_dict(good).total_values == 4
    bad = {**good, "fields": [good["fields"][0], {**good["fields"][1], "offset": 3}]}
    with pytest.raises(BundleError, match=r"fields\[1\]\.offset: expected 2"):
        AttributeHeads.from_dict(bad)
    with pytest.raises(BundleError, match="temperature"):
        AttributeHeads.from_dict({**good, "fields": [{**good["fields"][0], "temperature": 0}]})


def test_temperature_fit_undoes_an_overconfident_head_and_lowers_ece():
    rng = np.random.default_rng(0)
    n, k = 4000, 4
    true_logits = rng.normal(size=(n, k)) * 1.5
    targets = np.array([rng.choice(k, p=np.exp(z) / np.exp(z).sum()) for z in true_logits])
    overconfident = np.exp(3 * true_logits)
    overconfident /= overconfident.sum(1, keepdims=True)
    t = fit_temperature(overconfident, targets)
    assert t == pytest.approx(3.0, rel=0.15)
    calibrated = apply_temperature(overconfident, t)
    assert expected_calibration_error(calibrated, targets) < expected_calibration_error(overconfident, targets) / 2
    assert (calibrated.argmax(1) == overconfident.argmax(1)).all()  # accuracy unchanged


def test_ece_and_reliability_bins_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    targets = np.array([0, 1, 0, 0])
    bins = reliability(probs, targets, bins=10)
    assert [(b["n"], b["accuracy"]) for b in bins] == [(2, 1.0), (2, 0.5)]
    # |1.0 - 0.6| * 2/4 + |0.5 - 0.9| * 2/4
    assert expected_calibration_error(probs, targets, bins=10) == pytest.approx(0.4)
    assert expected_calibration_error(probs[:0], targets[:0]) is None and fit_temperature(probs[:0], targets[:0]) == 1.0
