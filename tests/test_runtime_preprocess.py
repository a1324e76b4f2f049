"""Every PIL mode becomes the RGB its pixels mean (or a clear InputError); a lazily opened truncated image
fails only its own input; one ``max_pixels`` limit, and no Pillow decompression-bomb warning on stderr; an
EXIF orientation tag is applied wherever an encoded image is decoded."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from PIL import Image

from runtime.preprocess import ALPHA_BACKGROUND, DEFAULT_MAX_PIXELS, InputError, to_rgb

WHITE = np.array(ALPHA_BACKGROUND, np.uint8)


def rgb(img) -> np.ndarray:
    return np.asarray(to_rgb(img))


def gradient16() -> np.ndarray:
    return (np.arange(64 * 32, dtype=np.uint32).reshape(64, 32) * 32).astype(np.uint16)  # 0..65504


def gray_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[:, :, None], 3, axis=2)


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    """Used to become an all-white image, described with confidence."""
    a = gradient16()
    path = tmp_path / "depth.png"
    Image.fromarray(a).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    out = rgb(path)
    np.testing.assert_array_equal(out, gray_rgb(np.rint(a / 257).astype(np.uint8)))
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 200
    np.testing.assert_array_equal(rgb(Image.fromarray(a)), out)  # a PIL image in memory too


def test_mode_i_and_f_by_their_range():
    a = gradient16().astype(np.int32)
    np.testing.assert_array_equal(rgb(Image.fromarray(a, "I")), gray_rgb(np.rint(a / 257).astype(np.uint8)))
    small = (np.arange(256, dtype=np.int32).reshape(16, 16))
    np.testing.assert_array_equal(rgb(Image.fromarray(small, "I")), gray_rgb(small.astype(np.uint8)))
    signed = small - 1000  # no known range: its own min..max
    out = rgb(Image.fromarray(signed, "I"))
    assert out.min() == 0 and out.max() == 255
    f = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    np.testing.assert_array_equal(rgb(Image.fromarray(f, "F")), gray_rgb(np.rint(f * 255).astype(np.uint8)))
    f255 = f * 255
    np.testing.assert_array_equal(rgb(Image.fromarray(f255, "F")), gray_rgb(np.rint(f255).astype(np.uint8)))
    flat = np.full((4, 4), 7.0, np.float32)
    np.testing.assert_array_equal(rgb(Image.fromarray(flat, "F")), gray_rgb(np.full((4, 4), 7, np.uint8)))
    nan = flat.copy()
    nan[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        to_rgb(Image.fromarray(nan, "F"))


def test_alpha_is_composited_on_the_documented_background():
    px = np.zeros((2, 2, 4), np.uint8)
    px[0, 0] = (200, 10, 10, 0)  # transparent: background, whatever colour hides underneath
    px[0, 1] = (200, 10, 10, 255)
    px[1, 0] = (0, 0, 0, 128)  # half black over white
    out = rgb(Image.fromarray(px, "RGBA"))
    np.testing.assert_array_equal(out[0, 0], WHITE)
    np.testing.assert_array_equal(out[0, 1], [200, 10, 10])
    assert abs(int(out[1, 0, 0]) - 127) <= 1
    la = Image.fromarray(np.array([[[50, 0], [50, 255]]], np.uint8), "LA")
    np.testing.assert_array_equal(rgb(la), [[WHITE, [50, 50, 50]]])
    np.testing.assert_array_equal(rgb(Image.fromarray(px, "RGBA").convert("RGBa"))[0, 1], [200, 10, 10])


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0  # index 0 (black) is transparent
    np.testing.assert_array_equal(rgb(p), [[WHITE, [255, 0, 0]]])
    path = tmp_path / "p.png"
    p.save(path, transparency=0)
    np.testing.assert_array_equal(rgb(path), [[WHITE, [255, 0, 0]]])


def test_bilevel_and_cmyk():
    bw = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    np.testing.assert_array_equal(rgb(bw), [[[0, 0, 0], [255, 255, 255]]])
    cmyk = Image.fromarray(np.array([[[0, 0, 0, 255], [255, 0, 0, 0], [0, 0, 0, 0]]], np.uint8), "CMYK")
    np.testing.assert_array_equal(rgb(cmyk), [[[0, 0, 0], [0, 255, 255], [255, 255, 255]]])


@pytest.mark.parametrize("mode", ["L", "P", "YCbCr", "HSV", "LAB", "RGBX", "I;16B", "PA", "La", "RGBa"])
def test_every_mode_converts_or_is_refused_clearly(mode):
    try:
        img = Image.new(mode, (5, 3))
    except ValueError:
        pytest.skip(f"this Pillow cannot create mode {mode}")
    try:
        out = to_rgb(img)
    except InputError as e:
        assert mode in str(e)
        return
    assert out.mode == "RGB" and out.size == (5, 3)


def test_pixel_limit_is_one_configurable_number(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    assert DEFAULT_MAX_PIXELS == 64_000_000
    to_rgb(path)
    with pytest.raises(InputError, match="100x100 is 10000 pixels, more than the 9999 pixel limit"):
        to_rgb(path, max_pixels=9999)
    with pytest.raises(InputError, match="pixel limit"):
        to_rgb(Image.new("L", (100, 100)), max_pixels=9999)


def test_no_decompression_bomb_warning_leaks(tmp_path):
    """Pillow warns between 1x and 2x its MAX_IMAGE_PIXELS and raises above; ours is the only limit shown."""
    path = tmp_path / "bomb.png"
    Image.new("L", (60, 60)).save(path)  # 3600 pixels
    code = textwrap.dedent(f"""
        import PIL.Image
        from runtime.preprocess import InputError, to_rgb
        PIL.Image.MAX_IMAGE_PIXELS = 2000  # 3600 > 2000: Pillow warns
        to_rgb({str(path)!r})
        PIL.Image.MAX_IMAGE_PIXELS = 1000  # 3600 > 2 x 1000: Pillow raises
        try:
            to_rgb({str(path)!r})
        except InputError as e:
            print(e)
    """)
    res = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert "bomb.png" in res.stdout and "too many pixels" in res.stdout


# --------------------------------------------------------------------------- in a Describer batch


@pytest.fixture(scope="module")
def describer(tiny_bundle):
    pytest.importorskip("onnxruntime")
    from runtime import Describer

    return Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1, channel_order="rgb")


def test_lazy_truncated_pil_image_fails_only_its_input(describer, tmp_path):
    good = np.random.default_rng(0).integers(0, 256, (64, 32, 3), np.uint8)
    path = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 100, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    lazy = Image.open(path)  # header only: the truncation shows when the pixels are decoded
    out = describer.describe([good, lazy, good])
    assert [r.ok for r in out] == [True, False, True]
    assert "input 1" in out[1].error and "not a readable image" in out[1].error
    assert out[0].tokens == out[2].tokens


def test_describe_crops_with_a_bad_frame_skips_every_box(describer):
    out = describer.describe_crops(np.zeros((10, 10), np.float32), [(0, 0, 5, 5), (1, 1, 4, 4)])
    assert len(out) == 2 and not any(r.ok for r in out) and all("frame" in r.error for r in out)
    assert describer.describe_crops(b"not an image", [(0, 0, 5, 5)])[0].error.startswith("frame:")
    assert describer.describe_crops(b"", None) == []
    with pytest.raises(InputError, match="frame"):
        describer.describe_crops(b"not an image", [(0, 0, 5, 5)], on_error="raise")
    frame = np.zeros((40, 40, 3), np.uint8)
    out = describer.describe_crops(frame, [(0, 0, 20, 20), "abcd", 7, (0, 0, 0, 0)])
    assert [r.ok for r in out] == [True, False, False, False]


def test_describer_max_pixels(tiny_bundle, tmp_path):
    pytest.importorskip("onnxruntime")
    from runtime import Describer

    d = Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1, max_pixels=1000, channel_order="rgb")
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 40)).save(path)
    out = d.describe([path, np.zeros((64, 32, 3), np.uint8)])
    assert [r.ok for r in out] == [False, True] and "max_pixels" in out[0].error


# --------------------------------------------------------------------------- EXIF orientation

# orientation tag -> k of np.rot90 that turns the upright pixels into the stored (sideways) ones
STORED_ROTATION = {3: 2, 6: 1, 8: -1}


def sideways(upright: np.ndarray, orientation: int, fmt: str) -> bytes:
    """``upright`` stored as a camera held sideways stores it: rotated, with the EXIF tag that undoes it."""
    stored = np.ascontiguousarray(np.rot90(upright, STORED_ROTATION[orientation]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, fmt, exif=exif, **({"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_png_pixels_equal_the_upright_image(orientation, tmp_path):
    from runtime.preprocess import image_from_bytes

    upright = np.random.default_rng(orientation).integers(0, 256, (40, 24, 3), np.uint8)
    data = sideways(upright, orientation, "PNG")
    path = tmp_path / "sideways.png"
    path.write_bytes(data)
    for got in (to_rgb(path), to_rgb(str(path)), to_rgb(data), image_from_bytes(data), to_rgb(Image.open(path))):
        assert got.size == (24, 40)
        np.testing.assert_array_equal(np.asarray(got), upright)
    once = to_rgb(Image.open(path))
    np.testing.assert_array_equal(np.asarray(to_rgb(once)), upright)  # the result carries no tag: not turned twice


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_jpeg_is_described_upright(orientation, describer, tmp_path):
    """A sideways JPEG reaches the model as the upright image (JPEG is lossy: compared with its own pixels,
    decoded as stored and turned upright with numpy)."""
    from runtime.preprocess import image_from_bytes, pil_to_rgb, preprocess

    rng = np.random.default_rng(10 + orientation)
    upright = np.repeat(np.repeat(rng.integers(0, 256, (10, 6, 3), np.uint8), 8, axis=0), 8, axis=1)  # 80x48
    data = sideways(upright, orientation, "JPEG")
    path = tmp_path / "sideways.jpg"
    path.write_bytes(data)
    with Image.open(path) as im:
        stored = np.asarray(im.convert("RGB"))  # Pillow decodes as stored, ignoring the tag
    want = np.ascontiguousarray(np.rot90(stored, -STORED_ROTATION[orientation]))
    assert want.shape == upright.shape and np.abs(want.astype(int) - upright).mean() < 4  # the right way up
    for got in (to_rgb(path), image_from_bytes(data), pil_to_rgb(Image.open(path))):
        np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(describer.preprocess(path), preprocess(Image.fromarray(want), *describer._pre))
    np.testing.assert_array_equal(describer.preprocess(data), describer.preprocess(Image.fromarray(want)))


def test_damaged_exif_leaves_the_pixels_as_stored_without_a_warning(tmp_path):
    upright = np.random.default_rng(5).integers(0, 256, (20, 12, 3), np.uint8)
    path = tmp_path / "damaged-exif.png"
    Image.fromarray(upright).save(path, "PNG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff")
    with warnings.catch_warnings():  # pytest resets the module's filters around each test
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(np.asarray(to_rgb(path)), upright)
    code = textwrap.dedent(f"""
        from runtime.preprocess import to_rgb
        print(to_rgb({str(path)!r}).size)
    """)
    res = subprocess.run([sys.executable, "-W", "default", "-c", code], check=False, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "(12, 20)", res.stderr
    assert res.stderr == ""  # Pillow's "Corrupt EXIF data" warning would be a line per image
