"""The native preprocessing gives the Python runtime's pixels: Pillow's bilinear resize (fixed point, its
order of passes), crops clipped as ``clip_box``, then 1/255, mean and std in float32."""

from __future__ import annotations

import numpy as np
import PIL
import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def native_pre(tiny_bundle):
    from runtime.native.compile import BuildUnavailable, build
    from runtime.native.library import NativeDescriber

    try:
        native = build("release")
    except BuildUnavailable as e:
        pytest.skip(f"native runtime not built: {e}")
    with NativeDescriber(tiny_bundle, threads=1, library=native.library) as rgb, \
            NativeDescriber(tiny_bundle, threads=1, channel_order="bgr", library=native.library) as bgr:
        yield {"rgb": rgb, "bgr": bgr}


@pytest.fixture(scope="module")
def python_pre(tiny_bundle):
    from runtime.bundle import Bundle
    from runtime.preprocess import clip_box, preprocess, to_rgb

    pre = Bundle.load(tiny_bundle).preprocess

    def run(array: np.ndarray, order: str, box=None) -> np.ndarray:
        img = to_rgb(array, 0, order)
        if box is not None:
            img = img.crop(clip_box(box, img.height, img.width, 0))
        return preprocess(img, pre["height"], pre["width"], pre["mean"], pre["std"])

    return run, min(pre["std"])


def _cases() -> list[tuple[tuple[int, ...], tuple[float, float, float, float] | None]]:
    """Frame shapes (H, W) and boxes: the model's own size, up- and downscaling, every aspect ratio, 1-pixel
    images and 1-pixel-wide boxes, both orders of Pillow's passes, and random ones."""
    rng = np.random.default_rng(0)
    fixed = [(64, 32), (1, 1), (1, 7), (9, 1), (2, 2), (63, 31), (65, 33), (128, 64), (129, 64), (200, 7), (7, 200),
             (1000, 3), (3, 1000), (480, 640), (64, 500), (500, 32), (300, 150), (66, 20), (20, 66), (70, 34)]
    cases: list = [(s, None) for s in fixed]
    cases += [((int(h), int(w)), None) for h, w in rng.integers(1, 400, (60, 2))]
    boxes = [(10, 5, 11, 60), (0, 0, 1, 1), (-10, -10, 5.5, 3.2), (20.7, 30.1, 20.9, 90.0), (3, 3, 200, 4),
             (0.5, 0.5, 119.5, 89.5), (100, 0, 400, 90)]
    cases += [((90, 120), b) for b in boxes]
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(10, 300, 2))
        x1, y1 = rng.uniform(-5, w - 1), rng.uniform(-5, h - 1)
        box = tuple(float(np.float32(v)) for v in (x1, y1, x1 + rng.uniform(0.3, w), y1 + rng.uniform(0.3, h)))
        cases.append(((h, w), box))
    return cases


def test_native_pixels_equal_python_pixels(native_pre, python_pre):
    run, min_std = python_pre
    one_step = 1 / 255 / min_std  # the largest change one uint8 step makes after normalising
    rng = np.random.default_rng(1)
    worst, differing = 0.0, 0
    cases = _cases()
    for i, (shape, box) in enumerate(cases):
        channels = (3, 4, 1)[i % 3]
        frame = rng.integers(0, 256, (*shape, channels) if channels > 1 else shape, dtype=np.uint8)
        order = "bgr" if i % 2 else "rgb"
        if box is not None and not (box[2] > max(box[0], 0) and box[3] > max(box[1], 0)):
            continue
        want = run(frame, order, box)
        got = native_pre[order].preprocess(frame, box)
        diff = float(np.abs(want - got).max())
        worst = max(worst, diff)
        differing += diff > 0
    print(f"preprocessing: {len(cases)} cases, max abs diff {worst:.3g} ({worst / one_step:.2f} uint8 steps), "
          f"{differing} cases differ (Pillow {PIL.__version__})")
    assert worst <= one_step * 1.0001
    if tuple(int(p) for p in PIL.__version__.split(".")[:1]) >= (13,):  # the pass order the native code follows
        assert worst == 0.0 and differing == 0


def test_strided_and_sliced_frames(native_pre, python_pre):
    """A view into a larger frame (rows further apart than its width) is read through its stride."""
    run, _ = python_pre
    big = np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    view = big[17:250, 33:301]
    assert not view.flags.c_contiguous
    assert np.array_equal(native_pre["rgb"].preprocess(view), run(np.ascontiguousarray(view), "rgb"))
    flipped = big[::-1, ::2]  # negative or pixel strides: the binding passes a packed copy
    assert np.array_equal(native_pre["rgb"].preprocess(flipped), run(np.ascontiguousarray(flipped), "rgb"))
