"""Crop choice and the attribute vote: measured quality, a bounded pool spread over a track's life."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from runtime.attribute_schema import empty_attributes
from runtime.video.select import (
    Candidate,
    CandidatePool,
    Quality,
    clip,
    laplacian_variance,
    occlusion,
    score,
    sharpness,
    touches_edge,
    upper_bound,
)
from runtime.video.vote import agreement_with, best_crop, vote


def _checker(h: int = 128, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy // 4 + xx // 4) % 2) * 200 + 20).astype(np.uint8)[..., None].repeat(3, axis=2)


def test_sharpness_falls_with_blur_and_with_upscaling():
    sharp = _checker()
    blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(2)))
    small = np.asarray(Image.fromarray(sharp).resize((16, 32)))  # a small crop, upscaled by the model
    s, b, u = (sharpness(x, (256, 128)) for x in (sharp, blurred, small))
    assert s > 4 * b and s > 2 * u
    assert laplacian_variance(np.ones((10, 10), np.float32)) == 0.0
    assert laplacian_variance(np.ones((2, 2), np.float32)) == 0.0


def test_clip_edge_and_occlusion():
    assert clip((-10, 0, 10, 20), 100, 50) == ((0.0, 0.0, 10.0, 20.0), 0.5)
    assert clip((200, 0, 300, 20), 100, 50) is None  # nothing inside
    assert clip((10, 10, 10.5, 20), 100, 50) is None  # less than a pixel
    assert touches_edge((0, 5, 10, 20), 100, 50) and not touches_edge((5, 5, 10, 20), 100, 50)
    occ = occlusion(np.array([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]], float))
    np.testing.assert_allclose(occ, [0.5, 0.5, 0.0])
    assert len(occlusion(np.zeros((0, 4)))) == 0


def test_score_prefers_large_sharp_whole_unoccluded():
    base = score(1.0, 200.0, 1.0, 0.0, False)
    assert 0 < base < 1
    assert score(0.3, 200.0, 1.0, 0.0, False) < base  # small
    assert score(1.0, 10.0, 1.0, 0.0, False) < base  # blurred
    assert score(1.0, 200.0, 0.6, 0.0, False) < base  # cut by the frame
    assert score(1.0, 200.0, 1.0, 0.5, False) < base  # half hidden
    assert score(1.0, 200.0, 1.0, 0.0, True) < base  # touching the edge
    assert upper_bound(1.0, 1.0, 0.0, False) >= base


def _cand(t: float, s: float) -> Candidate:
    return Candidate(int(t * 10), t, (0, 0, 1, 1), np.zeros((1, 1, 3), np.uint8), Quality(1, 1, 1, 0, False, s))


def test_pool_is_bounded_and_spread_over_the_life():
    pool = CandidatePool(capacity=6, bucket_s=0.5)
    rng = np.random.default_rng(0)
    for i in range(600):  # 60 s at 10 fps
        pool.offer(_cand(i / 10, float(rng.random())))
        assert len(pool) <= 6
    chosen = pool.choose(3)
    times = [c.timestamp for c in chosen]
    assert len(chosen) == 3 and times == sorted(times)
    assert times[0] < 20 and 20 <= times[1] < 40 and times[2] >= 40  # one from each third


def test_pool_keeps_the_best_of_a_stretch_and_says_what_it_wants():
    pool = CandidatePool(capacity=4, bucket_s=1.0)
    pool.offer(_cand(0.0, 0.2))
    assert pool.wants(0.5, 0.3) and not pool.wants(0.5, 0.1)
    pool.offer(_cand(0.5, 0.6))
    pool.offer(_cand(0.7, 0.4))
    assert [c.quality.score for c in pool.choose(3)] == [0.6]
    assert pool.wants(5.0, 0.01)  # a new stretch
    with pytest.raises(ValueError):
        CandidatePool(capacity=0)


def _attrs(**kw):
    a = empty_attributes()
    a.update(kw)
    return a


def test_vote_majority_with_agreement_and_tie_break():
    crops = [_attrs(upper="jacket", upper_color="red", carrying=["backpack"]),
             _attrs(upper="jacket", upper_color="blue", carrying=["backpack"]),
             _attrs(upper="coat", upper_color=None, carrying=[])]
    voted, agree = vote(crops, [0.2, 0.9, 0.5])
    assert voted["upper"] == "jacket" and agree["upper"] == pytest.approx(2 / 3, abs=1e-3)
    assert voted["upper_color"] == "blue"  # one vote each: the higher quality wins
    assert voted["carrying"] == ["backpack"] and agree["carrying"] == pytest.approx(2 / 3, abs=1e-3)
    assert voted["headwear"] is None and agree["headwear"] == 1.0
    assert set(voted) == set(empty_attributes())
    assert best_crop(crops, voted, [0.2, 0.9, 0.5]) == 1  # agrees on most keys
    assert agreement_with(crops[1], voted) == len(voted)


def test_vote_counts_not_stated_as_a_value():
    voted, agree = vote([_attrs(headwear="cap"), _attrs(), _attrs()], [1.0, 0.1, 0.1])
    assert voted["headwear"] is None and agree["headwear"] == pytest.approx(2 / 3, abs=1e-3)
    with pytest.raises(ValueError):
        vote([_attrs()], [])
    with pytest.raises(ValueError):
        best_crop([], _attrs(), [])
