"""Runtime inputs: paths, PIL images, arrays (RGB/BGR, gray, RGBA), bad inputs named, crops cut from frames.

The tiny random-init model writes nearly the same words for every image, so which pixels reached the
model is checked directly: ``generate_ids`` is wrapped to record the batches it receives.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def describer(tiny_bundle):
    """States RGB for numpy arrays once, for every call (an array without a channel order is a TypeError)."""
    from runtime import Describer

    return Describer(tiny_bundle, backend="onnxruntime-cpu", channel_order="rgb")


@pytest.fixture(scope="module")
def bgr_describer(tiny_bundle):
    from runtime import Describer

    return Describer(tiny_bundle, backend="onnxruntime-cpu", channel_order="bgr")


@pytest.fixture(scope="module")
def rgb_array() -> np.ndarray:
    """A uint8 (96, 48, 3) RGB person crop."""
    from pvlm.synth import render_person, sample_attributes

    rng = np.random.default_rng(17)
    return np.asarray(render_person(sample_attributes(rng), rng, size=(96, 48)), dtype=np.uint8).copy()


@pytest.fixture(scope="module")
def other_array() -> np.ndarray:
    rng = np.random.default_rng(18)
    return rng.integers(0, 256, (70, 30, 3), dtype=np.uint8)


def recorder(d, monkeypatch) -> list[np.ndarray]:
    """Record every pixel batch ``d`` sends to the model (rows in the order they are decoded)."""
    seen: list[np.ndarray] = []
    real = d.generate_ids

    def wrapped(pixels, *args, **kwargs):
        seen.append(np.array(pixels, copy=True))
        return real(pixels, *args, **kwargs)

    monkeypatch.setattr(d, "generate_ids", wrapped, raising=False)
    return seen


def pre(d, img) -> np.ndarray:
    """The runtime's transform of an RGB PIL image (already checked against pvlm.data elsewhere)."""
    from runtime.preprocess import preprocess

    return preprocess(img.convert("RGB"), *d._pre)


# --------------------------------------------------------------------------- input kinds


def test_path_pil_and_array_agree(describer, rgb_array, tmp_path, monkeypatch):
    png = tmp_path / "crop.png"
    Image.fromarray(rgb_array).save(png)
    seen = recorder(describer, monkeypatch)
    inputs = [str(png), png, Image.fromarray(rgb_array), rgb_array]
    out = describer.describe(inputs)
    assert len(out) == 4 and all(d.ok for d in out)
    assert len({tuple(d.tokens) for d in out}) == 1 and len({d.text for d in out}) == 1
    (batch,) = seen
    want = pre(describer, Image.fromarray(rgb_array))
    assert batch.shape == (4, 3, 64, 32)
    for row in batch:
        np.testing.assert_array_equal(row, want)


def test_single_inputs_are_not_iterated(describer, rgb_array, tmp_path):
    png = tmp_path / "one.png"
    Image.fromarray(rgb_array).save(png)
    for single in (rgb_array, str(png), png, Image.fromarray(rgb_array)):
        out = describer.describe(single)
        assert len(out) == 1 and out[0].ok
    assert describer.describe([]) == []


def test_bgr_array_equals_flipped_rgb(describer, bgr_describer, rgb_array):
    bgr = np.ascontiguousarray(rgb_array[:, :, ::-1])
    np.testing.assert_array_equal(bgr_describer.preprocess(bgr), describer.preprocess(rgb_array))
    assert not np.array_equal(describer.preprocess(bgr), describer.preprocess(rgb_array))  # the order matters
    a, b = bgr_describer.describe([bgr])[0], describer.describe([rgb_array])[0]
    assert a.ok and a.tokens == b.tokens and a.text == b.text
    # 4-channel BGRA too
    bgra = np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(bgr_describer.preprocess(bgra), describer.preprocess(rgb_array))


def test_bgr_does_not_affect_files_or_pil(describer, bgr_describer, rgb_array, tmp_path):
    png = tmp_path / "rgb.png"
    Image.fromarray(rgb_array).save(png)
    np.testing.assert_array_equal(bgr_describer.preprocess(png), describer.preprocess(png))
    pil = Image.fromarray(rgb_array)
    np.testing.assert_array_equal(bgr_describer.preprocess(pil), describer.preprocess(pil))


def test_grayscale_and_rgba_arrays_are_converted(describer, rgb_array):
    gray = rgb_array.mean(axis=2).astype(np.uint8)
    want_gray = pre(describer, Image.fromarray(gray, "L"))
    np.testing.assert_array_equal(describer.preprocess(gray), want_gray)
    np.testing.assert_array_equal(describer.preprocess(gray[:, :, None]), want_gray)
    got = describer.preprocess(gray)
    np.testing.assert_allclose(got[0] * 0.229 + 0.485, got[1] * 0.224 + 0.456, atol=1e-5)  # R == G: it is gray

    alpha = np.random.default_rng(0).integers(0, 256, rgb_array.shape[:2] + (1,), dtype=np.uint8)
    rgba = np.concatenate([rgb_array, alpha], axis=2)
    np.testing.assert_array_equal(describer.preprocess(rgba), pre(describer, Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(describer.preprocess(rgba), describer.preprocess(rgb_array))
    out = describer.describe([gray, rgba])
    assert [d.ok for d in out] == [True, True]


# --------------------------------------------------------------------------- bad inputs


@pytest.fixture()
def bad_inputs(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return {
        "missing": (str(tmp_path / "missing.png"), "file not found"),
        "corrupt": (corrupt, "not a readable image"),
        "zero-size": (np.zeros((0, 10, 3), np.uint8), "empty"),
        "float32": (np.zeros((20, 10, 3), np.float32), "uint8"),
        "two-channel": (np.zeros((20, 10, 2), np.uint8), "shape"),
        "int": (42, "unsupported input type"),
    }


def test_bad_inputs_skipped_and_named(tiny_bundle, bad_inputs, rgb_array, other_array, monkeypatch):
    """Bad inputs get an error naming them; good ones around them are described, in order (max_batch 3)."""
    from runtime import Describer

    d = Describer(tiny_bundle, backend="onnxruntime-cpu", max_batch=3, channel_order="rgb")
    seen = recorder(d, monkeypatch)
    bad = list(bad_inputs.values())
    inputs = [rgb_array, bad[0][0], bad[1][0], other_array, bad[2][0], bad[3][0], bad[4][0], rgb_array, bad[5][0],
              other_array]
    expected_error = {1: bad[0][1], 2: bad[1][1], 4: bad[2][1], 5: bad[3][1], 6: bad[4][1], 8: bad[5][1]}
    out = d.describe(inputs)
    assert len(out) == len(inputs)
    for i, res in enumerate(out):
        if i in expected_error:
            assert not res.ok and res.text == "" and res.tokens == [] and res.attributes == {}
            assert f"input {i}" in res.error and expected_error[i] in res.error, res.error
        else:
            assert res.ok and res.error is None and res.tokens
    # chunks [0..2], [3..5], [6..8], [9]: only the good rows reach the model, in input order
    good_rows = np.concatenate(seen)
    want = [d.preprocess(x) for x in (rgb_array, other_array, rgb_array, other_array)]
    assert good_rows.shape[0] == 4
    for got, w in zip(good_rows, want):
        np.testing.assert_array_equal(got, w)
    alone = d.describe([rgb_array, other_array])
    assert [r.tokens for r in out if r.ok] == [alone[0].tokens, alone[1].tokens] * 2


@pytest.mark.parametrize("kind", ["missing", "corrupt", "zero-size", "float32", "two-channel", "int"])
def test_bad_input_raises_with_on_error_raise(describer, tiny_bundle, bad_inputs, rgb_array, kind):
    from runtime import Describer, InputError

    bad, what = bad_inputs[kind]
    with pytest.raises(InputError, match="input 1") as info:
        describer.describe([rgb_array, bad], on_error="raise")
    assert what in str(info.value)
    strict = Describer(tiny_bundle, backend="onnxruntime-cpu", on_error="raise", channel_order="rgb")
    with pytest.raises(InputError, match="input 0"):
        strict.describe([bad])
    # a per-call "skip" overrides the constructor's policy
    res = strict.describe([bad, rgb_array], on_error="skip")
    assert [r.ok for r in res] == [False, True]


def test_decompression_bomb_is_a_named_input_error(describer, rgb_array, tmp_path, monkeypatch):
    """PIL refuses huge images with DecompressionBombError (not an OSError): it must not sink the batch."""
    import PIL.Image

    png = tmp_path / "huge.png"
    Image.fromarray(rgb_array).save(png)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # 96x48 now counts as a bomb
    out = describer.describe([rgb_array, png])
    assert [r.ok for r in out] == [True, False]
    assert "input 1" in out[1].error and "huge.png" in out[1].error


def test_all_inputs_bad(describer, bad_inputs):
    out = describer.describe([v for v, _ in bad_inputs.values()])
    assert [r.ok for r in out] == [False] * len(bad_inputs)
    assert [f"input {i}" in r.error for i, r in enumerate(out)] == [True] * len(bad_inputs)


def test_input_error_is_a_value_error():
    from runtime import InputError

    assert issubclass(InputError, ValueError)


# --------------------------------------------------------------------------- crops from a frame


@pytest.fixture(scope="module")
def frame() -> Image.Image:
    """A 100x200 (WxH) frame."""
    from pvlm.synth import render_person, sample_attributes

    rng = np.random.default_rng(23)
    return render_person(sample_attributes(rng), rng, size=(200, 100))


def test_describe_crops_clips_and_names_bad_boxes(describer, frame, monkeypatch):
    seen = recorder(describer, monkeypatch)
    boxes = [
        (10, 20, 60, 150),          # 0: inside
        (-15, -10, 40, 90),         # 1: sticks out top-left -> (0, 0, 40, 90)
        (70, 150, 130, 260),        # 2: sticks out bottom-right -> (70, 150, 100, 200)
        (150, 250, 200, 300),       # 3: entirely outside
        (1, 2, 3),                  # 4: malformed
        ("a", 0, 10, 10),           # 5: not numbers
        (50, 50, 40, 60),           # 6: inverted
        (10.4, 20.6, 59.5, 149.2),  # 7: fractional -> floor/ceil -> box 0
        (0, 0, float("nan"), 50),   # 8: NaN (would otherwise clip to the frame edge)
    ]
    out = describer.describe_crops(frame, boxes)
    assert len(out) == len(boxes)
    assert [r.ok for r in out] == [True, True, True, False, False, False, False, True, False]
    for i in (3, 4, 5, 6, 8):
        assert f"box {i}" in out[i].error
    assert "no area" in out[3].error
    manual = [frame.crop(b) for b in ((10, 20, 60, 150), (0, 0, 40, 90), (70, 150, 100, 200), (10, 20, 60, 150))]
    (batch,) = seen
    assert batch.shape[0] == 4
    for got, img in zip(batch, manual):
        np.testing.assert_array_equal(got, pre(describer, img))
    direct = describer.describe(manual)
    assert [r.tokens for r in out if r.ok] == [r.tokens for r in direct]


def test_describe_crops_from_bgr_array_frame(describer, bgr_describer, frame):
    rgb = np.asarray(frame, dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    box = [(-5, 10, 80, 190)]
    a = bgr_describer.describe_crops(bgr, box)[0]
    b = describer.describe_crops(rgb, box)[0]
    assert a.ok and a.tokens == b.tokens


def test_describe_crops_raise(describer, frame):
    from runtime import InputError

    with pytest.raises(InputError, match="box 1"):
        describer.describe_crops(frame, [(0, 0, 50, 50), (500, 500, 600, 600)], on_error="raise")
    with pytest.raises(InputError, match="box 0"):
        describer.describe_crops(frame, [None], on_error="raise")
