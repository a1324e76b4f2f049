"""The native runtime's C ABI, called in-process through ctypes: every refusal is a status and a message (the
bundle reader refuses what ``runtime.bundle`` refuses), crops describe as ``Describer.describe_crops`` does,
one opened bundle serves several threads, and the same C-ABI cases run clean under ASan + UBSan."""

from __future__ import annotations

import copy
import ctypes
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def native():
    """The release build of runtime/native (configured and built once; a no-op when up to date)."""
    from runtime.native.compile import BuildUnavailable, build

    try:
        return build("release")
    except BuildUnavailable as e:
        pytest.skip(f"native runtime not built: {e}")


@pytest.fixture(scope="module")
def lib(native):
    from runtime.native.library import load_library

    return load_library(native.library)


@pytest.fixture(scope="module")
def opened(native, tiny_bundle):
    from runtime.native.library import NativeDescriber

    with NativeDescriber(tiny_bundle, threads=1, min_crop=0, library=native.library) as d:  # 1-pixel boxes too
        yield d


def _open_status(lib, bundle: Path) -> tuple[str, str]:
    """(status name, message) of pvlm_open on ``bundle``; closes what opened."""
    handle = ctypes.c_void_p()
    status = lib.pvlm_open(os.fsencode(bundle), None, ctypes.byref(handle))
    message = lib.pvlm_last_error().decode()
    if status == 0:
        lib.pvlm_close(handle)
    else:
        assert handle.value is None
    return lib.pvlm_status_name(status).decode(), message


def _python_refusal(bundle: Path) -> str | None:
    from runtime.bundle import Bundle, BundleError

    try:
        Bundle.load(bundle)
    except BundleError as e:
        return str(e)
    return None


# ---- opening: each refusal, and the Python reader refuses the same --------------------------------------

def _mutate(good: dict, path: str, value) -> dict:
    d = copy.deepcopy(good)
    keys = path.split(".")
    node = d
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is KeyError:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return d


MUTATIONS = [  # (manifest key path, new value) -> the native reader names the same key as runtime.bundle
    ("version", 2), ("format", "other"), ("graphs.encoder.file", "../encoder.onnx"),
    ("graphs.encoder.file", "/etc/passwd"), ("graphs.encoder.file", "C:encoder.onnx"), ("graphs", KeyError),
    ("vocab.tokens", "abc"), ("special_tokens.eos", 10**9), ("special_tokens.bos", "1"), ("special_tokens.pad", 3),
    ("preprocess.height", 0), ("preprocess.height", 4096), ("preprocess.mean", [0.5]), ("preprocess.std", [0, 1, 1]),
    ("preprocess.interpolation", "bicubic"), ("preprocess.scale", 1.0), ("limits.max_batch", True),
    ("limits.max_new_tokens", 10_000), ("model.n_heads", 3), ("model.vocab_size", 7), ("model.max_len", 2),
    ("graphs.encoder.inputs.pixels.shape", ["batch", 3, 65, 32]), ("graphs.decoder_ort.inputs.tokens", KeyError),
    ("graphs.decoder.outputs.logits.dtype", "float16"), ("graphs.decoder.inputs.tokens.dtype", "int128"),
    ("artifacts.encoder.onnx", KeyError), ("engines", [{"file": "x.plan"}]), ("content_hash.algorithm", "md5"),
]


def _where(message: str) -> str:
    """The manifest key an 'invalid manifest: KEY...: ...' message names."""
    rest = message.split("invalid manifest: ", 1)[1]
    return rest.split(": ")[0].split(" is ")[0]


@pytest.mark.parametrize("path,value", MUTATIONS, ids=[f"{p}={v!r}"[:40] for p, v in MUTATIONS])
def test_manifest_refusals_match_the_python_reader(lib, tiny_bundle, tmp_path, path, value):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    good = json.loads((b / "manifest.json").read_text())
    if path == "artifacts.encoder.onnx":  # a dotted file name: not a key path
        bad = copy.deepcopy(good)
        del bad["artifacts"]["encoder.onnx"]
    else:
        bad = _mutate(good, path, value)
    (b / "manifest.json").write_text(json.dumps(bad))
    python = _python_refusal(b)
    status, message = _open_status(lib, b)
    assert python is not None, "the Python reader accepted it"
    assert status == "PVLM_ERR_MANIFEST", (status, message, python)
    assert "\n" not in message and message.startswith(str(b / "manifest.json"))
    assert _where(message) == _where(python), (message, python)


@pytest.mark.parametrize("text,needle", [
    ('{"a": 1, "a": 2}', "duplicate key"), ('{"a": NaN}', "corrupt manifest"), ("[" * 40 + "]" * 40, "deeper"),
    ("{not json", "corrupt manifest"), ("\ufeff{}", "BOM"),
])
def test_strict_json_is_refused_as_python_refuses_it(lib, tiny_bundle, tmp_path, text, needle):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    (b / "manifest.json").write_text(text, encoding="utf-8")
    assert _python_refusal(b) is not None
    status, message = _open_status(lib, b)
    assert status == "PVLM_ERR_MANIFEST" and needle in message, message


def test_bundle_refusals(lib, tiny_bundle, tmp_path):
    """Missing bundle, tampered graph (sha256), symlink out, a FIFO named as an artefact, an edited manifest
    section (content hash), a graph whose declared inputs differ from the manifest."""
    assert _open_status(lib, tmp_path / "nowhere")[0] == "PVLM_ERR_BUNDLE_MISSING"
    assert _open_status(lib, tmp_path)[0] == "PVLM_ERR_BUNDLE_MISSING"  # a folder without manifest.json

    def copy_of(name: str) -> Path:
        b = tmp_path / name
        shutil.copytree(tiny_bundle, b)
        return b

    b = copy_of("tampered")
    with open(b / "encoder.onnx", "ab") as f:
        f.write(b"\0")
    status, message = _open_status(lib, b)
    assert status == "PVLM_ERR_INTEGRITY" and "encoder.onnx: sha256 does not match" in message
    assert "sha256 does not match" in _python_refusal(b)

    b = copy_of("symlink")
    (tmp_path / "outside.onnx").write_bytes((b / "encoder.onnx").read_bytes())
    (b / "encoder.onnx").unlink()
    (b / "encoder.onnx").symlink_to(tmp_path / "outside.onnx")
    status, message = _open_status(lib, b)
    assert status == "PVLM_ERR_OUTSIDE_BUNDLE" and "resolves outside the bundle" in message
    assert "resolves outside the bundle" in _python_refusal(b)

    b = copy_of("fifo")
    m = json.loads((b / "manifest.json").read_text())
    m["engines"] = [{"format": "tensorrt-plan", "graph": "encoder", "file": "engine.plan", "precision": "fp16",
                     "sha256": "0" * 64, "bytes": 1}]
    (b / "manifest.json").write_text(json.dumps(m))
    os.mkfifo(b / "engine.plan")
    status, message = _open_status(lib, b)
    assert status == "PVLM_ERR_INTEGRITY" and "a FIFO, not a regular file" in message
    assert "a FIFO" in _python_refusal(b)

    b = copy_of("edited")
    m = json.loads((b / "manifest.json").read_text())
    m["vocab"]["tokens"][-1] = "edited"
    (b / "manifest.json").write_text(json.dumps(m))
    status, message = _open_status(lib, b)
    assert status == "PVLM_ERR_INTEGRITY" and "content hash mismatch in vocab" in message
    assert "content hash mismatch in vocab" in _python_refusal(b)

    b = copy_of("io")  # the manifest and its content hash agree; the graph file does not
    m = json.loads((b / "manifest.json").read_text())
    from runtime.bundle import Manifest

    m["graphs"]["decoder"]["inputs"] = dict(reversed(list(m["graphs"]["decoder"]["inputs"].items())))
    (b / "manifest.json").write_text(json.dumps(Manifest.from_dict(m).sealed().to_dict()))
    status, message = _open_status(lib, b)
    assert status == "PVLM_ERR_INTEGRITY" and "not graphs.decoder.inputs of the manifest" in message, message
    assert "not graphs.decoder.inputs of the manifest" in _python_refusal(b)


def test_open_options_are_checked(native, tiny_bundle):
    from runtime.native.library import NativeDescriber, NativeError

    cases = [({"precision": "int8"}, "PVLM_ERR_UNSUPPORTED", "no int8 graphs"),
             ({"decoder": "fastest"}, "PVLM_ERR_ARGUMENT", "decoder must be"),
             ({"max_batch": 9}, "PVLM_ERR_LIMIT", "max_batch must be in [1, 8]"),
             ({"max_new_tokens": 65}, "PVLM_ERR_LIMIT", "max_new_tokens must be in [1, 64]"),
             ({"encoder_chunk_pixels": -1}, "PVLM_ERR_ARGUMENT", "encoder_chunk_pixels must be >= 0, got -1")]
    for options, name, needle in cases:
        with pytest.raises(NativeError) as e:
            NativeDescriber(tiny_bundle, library=native.library, **options)
        assert e.value.name == name and needle in e.value.message, e.value


# ---- describing: bad inputs, results ------------------------------------------------------------------------

def test_bad_inputs_return_their_code_and_message(lib, opened):
    from runtime.native import library as L

    frame = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    good = L._Image(frame.ctypes.data, 40, 48, 0, 0, None)

    def call(edit=None, count=2, tokens=0, images=True, out=True):
        batch = (L._Image * max(count, 1))(*[L._Image(good.data, 40, 48, 0, 0, None) for _ in range(max(count, 1))])
        if edit:
            edit(batch[count - 1])
        results = ctypes.POINTER(L._Results)()
        status = lib.pvlm_describe(opened.handle, batch if images else None, count, tokens,
                                   ctypes.byref(results) if out else None)
        assert not results  # nothing to free after a failure
        return lib.pvlm_status_name(status).decode(), lib.pvlm_last_error().decode()

    alive = []  # boxes the pointers refer to, kept for the calls

    def box(*v):
        alive.append(L._Box(*v))
        return ctypes.pointer(alive[-1])

    cases = {
        "null buffer": (lambda im: setattr(im, "data", None), "PVLM_ERR_ARGUMENT", "input 1: data is NULL"),
        "zero width": (lambda im: setattr(im, "width", 0), "PVLM_ERR_ARGUMENT", "input 1: width and height must be"),
        "negative height": (lambda im: setattr(im, "height", -3), "PVLM_ERR_ARGUMENT", "got 40x-3"),
        "negative stride": (lambda im: setattr(im, "stride", -120), "PVLM_ERR_ARGUMENT", "stride -120"),
        "stride under one row": (lambda im: setattr(im, "stride", 119), "PVLM_ERR_ARGUMENT", "stride 119"),
        "unknown format": (lambda im: setattr(im, "format", 9), "PVLM_ERR_ARGUMENT", "unknown pixel format 9"),
        "box outside": (lambda im: setattr(im, "box", box(100, 0, 200, 10)), "PVLM_ERR_BOX",
                        "box 1 (100.0, 0.0, 200.0, 10.0): no area inside the 40x48 frame"),
        "NaN box": (lambda im: setattr(im, "box", box(float("nan"), 0, 5, 5)), "PVLM_ERR_BOX", "finite numbers"),
        "inf box": (lambda im: setattr(im, "box", box(0, 0, float("inf"), 5)), "PVLM_ERR_BOX", "finite numbers"),
    }
    for name, (edit, want, needle) in cases.items():
        status, message = call(edit)
        assert (status, needle in message) == (want, True), (name, status, message)
    limit = "batch 9 exceeds max_batch 8 (split it into calls of at most max_batch images)"
    assert call(count=9) == ("PVLM_ERR_LIMIT", limit)
    assert call(count=0)[0] == "PVLM_ERR_ARGUMENT"
    assert call(tokens=65)[1] == "max_new_tokens must be in [1, 64], got 65"
    assert call(images=False) == ("PVLM_ERR_ARGUMENT", "images is NULL")
    assert call(out=False) == ("PVLM_ERR_ARGUMENT", "out is NULL")
    status = lib.pvlm_describe(None, None, 1, 0, None)
    assert lib.pvlm_status_name(status) == b"PVLM_ERR_ARGUMENT"
    out = np.empty(10, np.float32)
    status = lib.pvlm_preprocess(opened.handle, ctypes.byref(good), out.ctypes.data, out.size)
    assert lib.pvlm_status_name(status) == b"PVLM_ERR_ARGUMENT" and b"out_len 10" in lib.pvlm_last_error()
    lib.pvlm_close(None)  # both ignore NULL
    lib.pvlm_results_free(None)
    ok = opened.describe_images([frame])  # the handle still works after every refusal
    assert len(ok) == 1 and ok[0].tokens


def test_crops_describe_as_the_python_describer(opened, tiny_bundle):
    from runtime import Describer

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    boxes = [(0, 0, 320, 240), (10.5, 20.25, 60.7, 200.1), (300, 10, 301, 230), (-50, -50, 40, 30),
             (100, 100, 101, 101), (5, 5, 315, 12), (200, 0, 330, 250), (17, 33, 97, 190), (1, 1, 2, 239)]
    py = Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1, min_crop=0)
    want = [d.tokens for d in py.describe_crops(frame, boxes, channel_order="rgb")]
    got = opened.describe_crops(frame, boxes)
    assert [d.tokens for d in got] == want
    assert [d.text for d in got] == [d.text for d in py.describe_crops(frame, boxes, channel_order="rgb")]
    bgr = np.ascontiguousarray(frame[:, :, ::-1])
    from runtime.native.library import NativeDescriber

    with NativeDescriber(tiny_bundle, threads=1, channel_order="bgr", min_crop=0, library=opened.lib._name) as d:
        assert [x.tokens for x in d.describe_crops(bgr, boxes)] == want
    t = got[0].timings
    assert set(t) == {"preprocess_ms", "encode_ms", "decode_ms", "steps", "total_ms", "batch"}
    assert t["batch"] == 8 and t["steps"] >= 1 and t["total_ms"] >= t["encode_ms"] + t["decode_ms"] - 1e-6


def test_generate_is_the_python_greedy_loop(opened, tiny_bundle):
    """With and without EOS, with and without the repetition guard (which ends the random model's rows)."""
    from runtime import Describer

    pixels = np.random.default_rng(2).standard_normal((5, 3, 64, 32)).astype(np.float32)
    py = Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1)
    for stop in (True, False):
        for guard in (0, 1, 3, 10):
            ids, t = py.generate_ids(pixels, 24, stop_at_eos=stop, no_repeat_ngram_size=guard)
            rows, timings = opened.generate(pixels, 24, stop_at_eos=stop, no_repeat_ngram_size=guard)
            assert [r.tokens for r in rows] == ids, (stop, guard)
            assert timings["steps"] == t["steps"]
            assert [r.ended for r in rows] == [len(row) < 24 for row in ids]
    assert {len(r.tokens) for r in opened.generate(pixels, 24, no_repeat_ngram_size=3)[0]} != {24}


def test_defaults_are_the_describers(native, tiny_bundle):
    """Boxes smaller than 1/8 of the model's input (after clipping) are refused by default, as Describer does;
    the repetition guard defaults as DecodingOptions does."""
    from runtime import Describer
    from runtime.decoding import DecodingOptions
    from runtime.native.library import NativeDescriber, NativeError

    frame = np.zeros((100, 100, 3), np.uint8)
    py = Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1).describe_crops(frame, [(0, 0, 3, 50)],
                                                                                     channel_order="rgb")
    with NativeDescriber(tiny_bundle, threads=1, library=native.library) as d:
        assert (d.info["min_crop_width"], d.info["min_crop_height"]) == (4, 8)
        # the library's default repetition guard is the Python runtime's (a change there must reach pvlm.h)
        assert d.info["no_repeat_ngram_size"] == DecodingOptions().no_repeat_ngram_size
        with pytest.raises(NativeError) as e:
            d.describe_images([frame], [(0, 0, 3, 50)])
        assert d.describe_images([frame], [(-10, 0, 4, 8)])[0].tokens  # clipped to 4x8: accepted
    assert e.value.name == "PVLM_ERR_BOX"
    assert e.value.message.split(" (width x height")[0] == py[0].error.split(" (width x height")[0]


def test_one_bundle_many_threads(opened):
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (int(rng.integers(20, 200)), int(rng.integers(20, 200)), 3), dtype=np.uint8)
              for _ in range(6)]
    alone = [d.tokens for d in opened.describe_images(frames)]
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: [d.tokens for d in opened.describe_images(frames)], range(12)))
    assert all(r == alone for r in runs)


def test_c_abi_cases_run_clean_under_asan_and_ubsan(tiny_bundle, tmp_path):
    """tests/abi_test.cpp (the cases above, in C++) built with -fsanitize=address,undefined.

    A driver program rather than this process: loading an ASan library into Python needs the ASan runtime
    preloaded (LD_PRELOAD) and reports CPython's own allocations."""
    from runtime.native.compile import BuildUnavailable, build

    try:
        asan = build("asan")
    except BuildUnavailable as e:
        pytest.skip(f"native runtime not built: {e}")
    assert asan.info["sanitize"] is True and asan.abi_test is not None
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:strict_string_checks=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    proc = subprocess.run([str(asan.abi_test), str(tiny_bundle), str(tmp_path / "scratch")], capture_output=True,
                          text=True, timeout=600, env=env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "ERROR: AddressSanitizer" not in out and "runtime error:" not in out and "LeakSanitizer" not in out
    assert "0 failed" in proc.stdout and proc.stdout.count("ok - ") >= 50
