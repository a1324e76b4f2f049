"""``pvlm-describe-native`` against the Python runtime on the same image files: the same decoded pixels, the
same tokens and text for FP32 and INT8 (a trained tiny model, so rows end at different steps and leave the
batch), and JSON lines shaped as ``pvlm-describe --json --tokens`` prints them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_PNG, N_JPEG = 72, 12


@pytest.fixture(scope="module")
def cli(native_cli: Path) -> Path:
    return native_cli


@pytest.fixture(scope="module")
def bundle(synth_dir, tmp_path_factory) -> Path:
    """The tiny preset trained for 12 epochs (its descriptions differ and end at different lengths), exported
    with ``pvlm-export onnx --int8``: FP32 graphs and an INT8 variant in one bundle."""
    from export.cli import main
    from pvlm.train import TrainConfig, train

    run = tmp_path_factory.mktemp("native-train") / "run"
    best = train(TrainConfig(train=str(synth_dir / "train.jsonl"), val=str(synth_dir / "val.jsonl"), out=str(run),
                             preset="tiny", epochs=12, batch_size=8, lr=3e-3, warmup_steps=2, progress=False,
                             min_freq=1, device="cpu"))["best"]
    out = tmp_path_factory.mktemp("native-bundle") / "tiny"
    res = CliRunner().invoke(main, ["onnx", str(best), "--out", str(out), "--max-batch", "8", "--max-new-tokens", "24",
                                    "--int8", "--calibration", str(synth_dir / "train.jsonl"), "--accept-mismatch"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    """Synthetic person crops of many sizes (down- and upscaled to the model's 64x32): PNG, then JPEG, then
    files of other modes and EXIF orientations."""
    from PIL import Image

    from pvlm.synth import synth_example

    d = tmp_path_factory.mktemp("native-images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_PNG + N_JPEG):
        img = synth_example(11, i, (256, 128), True)[0]
        img = img.resize((int(rng.integers(8, 200)), int(rng.integers(16, 300))))
        p = d / (f"crop{i:03d}.png" if i < N_PNG else f"crop{i:03d}.jpg")
        img.save(p, **({"quality": 90} if p.suffix == ".jpg" else {}))
        paths.append(str(p))
    a = rng.integers(0, 256, (70, 40, 4), dtype=np.uint8)
    for name, img in [("rgba.png", Image.fromarray(a, "RGBA")), ("la.png", Image.fromarray(a[:, :, :2], "LA")),
                      ("l.png", Image.fromarray(a[:, :, 0])), ("bits.png", Image.fromarray(a[:, :, 0] > 128)),
                      ("i16.png", Image.fromarray(a[:, :, 0].astype(np.uint16) * 257)),
                      ("gray.jpg", Image.fromarray(a[:, :, 1]))]:
        img.save(d / name)
        paths.append(str(d / name))
    Image.fromarray(a[:, :, :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(d / "p.png",
                                                                                               transparency=3)
    paths.append(str(d / "p.png"))
    for orientation in range(2, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        for suffix in ("jpg", "png"):
            Image.fromarray(a[:50, :, :3]).save(d / f"exif{orientation}.{suffix}", exif=exif.tobytes())
            paths.append(str(d / f"exif{orientation}.{suffix}"))
    return paths


def run_cli(cli: Path, bundle: Path, paths: list[str], *options: str) -> tuple[int, list[dict], str]:
    proc = subprocess.run([str(cli), str(bundle), *paths, "--threads", "1", *options], capture_output=True,
                          text=True, timeout=600, check=False)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tokens_equal_the_python_describer(cli, bundle, images, precision, tmp_path):
    from runtime import Describer

    python = Describer(bundle, backend="onnxruntime-cpu", threads=1, precision=precision).describe(images)
    rc, native, stderr = run_cli(cli, bundle, images, "--precision", precision, "--dump-inputs", str(tmp_path))
    assert rc == 0, stderr
    assert [r["image"] for r in native] == images and all(r["error"] is None for r in native)
    crops = N_PNG + N_JPEG
    same = [p.tokens == n["tokens"] for p, n in zip(python, native)]
    print(f"{precision}: tokens equal for {sum(same)}/{len(images)} files ({crops} crops)")
    assert all(same[:N_PNG]), "PNG crops"
    assert all(same[N_PNG:crops]), "JPEG crops (libjpeg's decoder against Pillow's)"
    assert all(same[crops:]), "other modes and EXIF orientations"
    assert [p.text for p in python] == [n["text"] for n in native]
    lengths = {len(p.tokens) for p in python[:crops]}
    assert len(lengths) > 2 and min(lengths) < 24, lengths  # rows end at EOS at different steps
    assert len({tuple(p.tokens) for p in python[:crops]}) > 10  # the crops are told apart


def test_decoded_pixels_equal_pillows(cli, bundle, images, tmp_path):
    """PNG and JPEG decoding, mode conversion and EXIF orientation give the pixels runtime.preprocess gives."""
    from runtime.bundle import Bundle
    from runtime.preprocess import preprocess, to_rgb

    pre = Bundle.load(bundle).preprocess
    rc, _, stderr = run_cli(cli, bundle, images, "--dump-inputs", str(tmp_path))
    assert rc == 0, stderr
    worst = {}
    for i, path in enumerate(images):
        want = preprocess(to_rgb(path), pre["height"], pre["width"], pre["mean"], pre["std"])
        got = np.fromfile(tmp_path / f"{i}.f32", np.float32).reshape(want.shape)
        kind = Path(path).suffix
        worst[kind] = max(worst.get(kind, 0.0), float(np.abs(want - got).max()))
    print(f"decoded pixels, max abs diff by format: {worst}")
    assert worst[".png"] == 0.0
    assert worst[".jpg"] == 0.0  # libjpeg-turbo's ISLOW IDCT and fancy upsampling, as Pillow's


def test_portable_decoder_gives_the_same_tokens(cli, bundle, images):
    subset = images[:16]
    _, bound, _ = run_cli(cli, bundle, subset)
    rc, portable, stderr = run_cli(cli, bundle, subset, "--decoder", "portable")
    assert rc == 0, stderr
    assert [r["tokens"] for r in portable] == [r["tokens"] for r in bound]


def test_json_lines_have_the_pvlm_describe_shape(cli, bundle, images, tmp_path):
    from runtime.cli import main

    paths = images[:3] + [str(tmp_path / "missing.png")]
    res = CliRunner().invoke(main, [str(bundle), *paths, "--json", "--tokens", "--backend", "onnxruntime-cpu",
                                    "--threads", "1", "-q"])
    python = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    rc, native, stderr = run_cli(cli, bundle, paths)
    assert res.exit_code == rc == 1  # some images failed
    assert len(python) == len(native) == 4
    for p, n in zip(python, native):
        for key in ("schema_version", "bundle_id", "image", "text", "tokens", "error"):
            assert n[key] == p[key], key
        assert n["path"] == n["image"]
        assert set(n["timings"]) == set(p["timings"])
        assert n["backend"] == "native-cpu"
        assert set(n) == set(p) - {"attributes"} | {"path"}  # attributes are parsed in Python
    assert native[3]["error"].endswith("missing.png): file not found") and native[3]["timings"] == {}
    assert f"error: {native[3]['error']}" in stderr
    ok = native[0]["timings"]
    assert ok["batch"] == 3 and ok["steps"] >= 1 and ok["total_ms"] >= ok["encode_ms"]


def test_unreadable_inputs_fail_as_pvlm_describe_fails_them(cli, bundle, images, tmp_path):
    """Each bad file gets its own error line (a FIFO is refused unread) and the others are described."""
    import os

    from runtime.cli import main

    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "notes.png").write_text("not an image")
    bad = [str(tmp_path / n) for n in ("pipe.png", "notes.png", "absent.png")]
    paths = [images[0], *bad]
    res = CliRunner().invoke(main, [str(bundle), *paths, "--json", "--tokens", "--backend", "onnxruntime-cpu", "-q"])
    python = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    rc, native, stderr = run_cli(cli, bundle, paths)
    assert rc == res.exit_code == 1
    assert native[0]["error"] is None and native[0]["tokens"] == python[0]["tokens"]
    for p, n in zip(python[1:], native[1:], strict=True):
        # the same words up to any parenthesised detail (Pillow's and libpng's reasons differ)
        assert n["error"].split("): ")[1].split(" (")[0] == p["error"].split("): ")[1].split(" (")[0], (n, p)
        assert n["error"].startswith(p["error"].split("): ")[0]) and f"error: {n['error']}" in stderr
    assert [n["error"].rsplit("): ", 1)[1] for n in native[1:]] == [
        "is a FIFO, not a regular file", "not a readable image (pvlm-describe-native reads PNG and JPEG files)",
        "file not found"]
    # folders are not expanded (pvlm-describe lists their images): a folder is an input that is not a file
    (tmp_path / "folder").mkdir()
    rc, native, _ = run_cli(cli, bundle, [str(tmp_path / "folder")])
    assert rc == 2 and native[0]["error"].endswith("folder): is a directory")


def test_repetition_guard_ends_rows_as_the_python_runtime_does(cli, bundle, images):
    from runtime import Describer
    from runtime.decoding import DecodingOptions

    subset = images[:24]
    python = Describer(bundle, backend="onnxruntime-cpu", threads=1,
                       decoding=DecodingOptions(no_repeat_ngram_size=3)).describe(subset)
    rc, native, stderr = run_cli(cli, bundle, subset, "--no-repeat-ngram-size", "3")
    assert rc == 0, stderr
    assert [r["tokens"] for r in native] == [p.tokens for p in python]
    _, unguarded, _ = run_cli(cli, bundle, subset)
    assert [r["tokens"] for r in unguarded] != [r["tokens"] for r in native]  # the guard changed some rows
