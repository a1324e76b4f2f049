"""``pvlm-describe BUNDLE IMAGE...``: a line per image, --json lines, bad images (exit 1), bad bundle (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")


def run_cli(*args):
    from runtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    from pvlm.synth import render_person, sample_attributes

    d = tmp_path_factory.mktemp("cli-images")
    rng = np.random.default_rng(31)
    paths = []
    for i, size in enumerate(((96, 48), (128, 64), (64, 32))):
        p = d / f"person{i}.png"
        render_person(sample_attributes(rng), rng, size=size).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def expected(tiny_bundle, images):
    from runtime import Describer

    return Describer(tiny_bundle, backend="onnxruntime-cpu").describe(images)


def test_one_line_per_image(tiny_bundle, images, expected):
    res = run_cli(tiny_bundle, *images, "--backend", "onnxruntime-cpu")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines == [f"{p}\t{e.text}" for p, e in zip(images, expected)]
    assert "error" not in res.stderr


def test_json_lines(tiny_bundle, images, expected):
    from runtime.attributes import ATTRIBUTE_KEYS

    res = run_cli(tiny_bundle, *images, "--json", "--backend", "onnxruntime-cpu")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["image"] for r in rows] == images
    assert [r["text"] for r in rows] == [e.text for e in expected]
    assert [r["tokens"] for r in rows] == [e.tokens for e in expected]
    for r, e in zip(rows, expected):
        assert set(r["attributes"]) == set(ATTRIBUTE_KEYS)
        assert r["attributes"] == json.loads(json.dumps(e.attributes))
        assert r["error"] is None
        assert r["timings"]["batch"] == len(images)


def test_missing_image_reported_others_printed(tiny_bundle, images, expected, tmp_path):
    missing = str(tmp_path / "ghost.png")
    res = run_cli(tiny_bundle, images[0], missing, images[1])
    assert res.exit_code == 1, res.output
    errs = res.stderr.splitlines()
    assert len([e for e in errs if e.startswith("error:")]) == 1
    err = next(e for e in errs if e.startswith("error:"))
    assert "ghost.png" in err and "input 1" in err
    assert res.stdout.splitlines() == [f"{images[0]}\t{expected[0].text}", f"{images[1]}\t{expected[1].text}"]


def test_missing_image_json(tiny_bundle, images, tmp_path):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"not an image at all")
    res = run_cli(tiny_bundle, corrupt, images[2], "--json")
    assert res.exit_code == 1, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["image"] for r in rows] == [str(corrupt), images[2]]
    assert "input 0" in rows[0]["error"] and rows[0]["text"] == "" and rows[0]["tokens"] == []
    assert rows[1]["error"] is None and rows[1]["tokens"]
    assert any(line.startswith("error:") and "broken.png" in line for line in res.stderr.splitlines())


def test_nonexistent_bundle(tmp_path, images):
    res = run_cli(tmp_path / "no-bundle", images[0])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error:")
    assert "no-bundle" in res.stderr
    assert res.stdout == ""


def test_tampered_bundle(tiny_bundle, tmp_path, images):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    (b / "decoder.onnx").write_bytes((b / "decoder.onnx").read_bytes()[:-10])
    res = run_cli(b, images[0])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error:") and "sha256" in res.stderr


def test_unknown_backend(tiny_bundle, images):
    res = run_cli(tiny_bundle, images[0], "--backend", "quantum")
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error:") and "quantum" in res.stderr


def test_options_max_new_tokens_and_bgr(tiny_bundle, images, expected):
    res = run_cli(tiny_bundle, *images, "--json", "--max-new-tokens", "3", "--max-batch", "2", "--bgr")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 3
    # --bgr leaves image files alone; the first 3 greedy tokens are a prefix of the full run
    assert [r["tokens"] for r in rows] == [e.tokens[:3] for e in expected]
    assert [r["timings"]["batch"] for r in rows] == [2, 2, 1]
    assert all(r["timings"]["steps"] <= 3 for r in rows)


def test_requires_an_image(tiny_bundle):
    res = run_cli(tiny_bundle)
    assert res.exit_code == 2
    assert "IMAGES" in res.output or "Missing argument" in res.output

