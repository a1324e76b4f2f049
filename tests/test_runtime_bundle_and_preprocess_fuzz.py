"""Bounded fuzzing (Hypothesis) of the two parsers that take untrusted bytes: the bundle manifest loader and
the image decoder. Only the documented errors may come out: BundleError, InputError. Derandomised, 200
examples each, so CI runs the same cases in seconds."""

from __future__ import annotations

import copy
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="fuzzing needs hypothesis (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from runtime.bundle import Bundle, BundleError  # noqa: E402
from runtime.preprocess import InputError, to_rgb  # noqa: E402

EXAMPLES = 200
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
COUNTS: dict[str, Counter] = {}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["encoder.onnx", "../x", "/etc/passwd", "", ".", "a/../../b", "C:\\x", "pvlm-bundle"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["file", "path", "sha256", "dtype", "shape", "tokens", "x"]) | st.text(max_size=6),
        children, max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def fuzz_bundle(tiny_bundle, tmp_path_factory) -> Path:
    b = tmp_path_factory.mktemp("fuzz") / "b"
    shutil.copytree(tiny_bundle, b)
    return b


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _load(bundle: Path, text: str | bytes, kind: str) -> None:
    (bundle / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    try:
        Bundle.load(bundle, verify=True)
        outcome = "accepted"
    except BundleError as e:
        assert "\n" not in str(e)
        outcome = "BundleError"
    COUNTS.setdefault(f"manifest/{kind}", Counter())[outcome] += 1


@FUZZ
@given(data=st.data())
def test_fuzz_manifest_mutations(fuzz_bundle, tiny_bundle, data):
    """A real manifest with one node replaced (or deleted) by arbitrary JSON."""
    good = json.loads((tiny_bundle / "manifest.json").read_text())
    good["vocab"]["tokens"] = good["vocab"]["tokens"][:8]  # small, so examples shrink fast
    good["special_tokens"] = {"pad": 0, "bos": 1, "eos": 2, "unk": 3}
    paths = [p for p in _paths(good) if len(p) <= 4 and not (len(p) > 2 and p[:2] == ("vocab", "tokens"))]
    path = data.draw(st.sampled_from(paths))
    m = copy.deepcopy(good)
    if not path:
        m = data.draw(json_values)
    else:
        node = m
        for k in path[:-1]:
            node = node[k]
        if data.draw(st.booleans()) and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = data.draw(json_values)
    _load(fuzz_bundle, json.dumps(m), "mutated")


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=300))
def test_fuzz_manifest_bytes(fuzz_bundle, raw):
    """Arbitrary bytes and text (mostly not JSON at all) as manifest.json."""
    _load(fuzz_bundle, raw, "bytes")


def _encoded_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for fmt, mode in (("PNG", "RGB"), ("PNG", "I;16"), ("PNG", "P"), ("JPEG", "RGB"), ("JPEG", "CMYK"),
                      ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "F"), ("WEBP", "RGBA"), ("PNG", "LA")):
        arr = rng.integers(0, 256, (12, 9, 4), np.uint8)
        img = Image.fromarray(arr, "RGBA").convert(mode) if mode not in ("I;16", "F") else \
            Image.fromarray(arr[:, :, 0].astype(np.uint16 if mode == "I;16" else np.float32) * 200)
        buf = io.BytesIO()
        try:
            img.save(buf, fmt)
        except (OSError, KeyError, ValueError):
            continue  # this Pillow lacks the encoder
        out.append(buf.getvalue())
    return out


SEEDS = _encoded_seeds()


def _decode(data: bytes, kind: str, lazy: bool = False) -> None:
    try:
        src = Image.open(io.BytesIO(data)) if lazy else data
    except Exception:  # noqa: BLE001 - Image.open itself is Pillow's, outside our decoder
        src = data
    try:
        img = to_rgb(src, 0, max_pixels=4_000_000)
        assert img.mode == "RGB" and img.width > 0 and img.height > 0
        outcome = "decoded"
    except InputError as e:
        assert "input 0" in str(e)
        outcome = "InputError"
    COUNTS.setdefault(f"image/{kind}", Counter())[outcome] += 1


@FUZZ
@given(seed=st.sampled_from(range(len(SEEDS))), data=st.data())
def test_fuzz_image_mutations(seed, data):
    """Real PNG/JPEG/GIF/BMP/TIFF/WebP files with bytes overwritten and/or truncated, as bytes and lazy PIL images."""
    buf = bytearray(SEEDS[seed])
    for _ in range(data.draw(st.integers(0, 3))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(buf))) if data.draw(st.booleans()) else len(buf)
    _decode(bytes(buf[:cut]), "mutated", lazy=data.draw(st.booleans()))


@FUZZ
@given(raw=st.binary(min_size=1, max_size=400))
def test_fuzz_image_bytes(raw):
    _decode(raw, "bytes")


def test_fuzz_report():
    """Prints the outcome counts (run with -s); every fuzz test above ran its examples."""
    for name, c in sorted(COUNTS.items()):
        print(f"fuzz {name}: {sum(c.values())} cases, {dict(c)}, 0 crashes")
    if COUNTS:
        assert all(sum(c.values()) >= EXAMPLES for c in COUNTS.values()), COUNTS
