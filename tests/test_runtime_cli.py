"""``pvlm-describe BUNDLE IMAGE...``: a line per image, --json lines (validated against the bundle's schema),
folders, globs and stdin, bad images (exit 1), bad bundle (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")


def run_cli(*args, stdin=None):
    from runtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


def plain(path, e) -> str:
    from runtime.cli import attribute_summary

    return f"{path}\t{e.text}\t{attribute_summary(e.attributes)}"


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
    assert lines == [plain(p, e) for p, e in zip(images, expected)]
    assert "error" not in res.stderr
    assert all(len(line.split("\t")) == 3 for line in lines)  # path, text, parsed attributes


def test_attribute_summary_shows_what_the_text_states():
    from runtime.attributes import parse_attributes
    from runtime.cli import attribute_summary

    attrs = parse_attributes("a young woman in a red jacket and blue jeans, carrying a backpack and an umbrella")
    summary = attribute_summary(attrs)
    assert "upper=jacket" in summary and "upper_color=red" in summary and "gender=female" in summary
    assert "carrying=backpack,umbrella" in summary and "headwear" not in summary


def test_json_lines(tiny_bundle, images, expected):
    from runtime.attribute_schema import ATTRIBUTE_KEYS
    from runtime.description_schema import SCHEMA_VERSION, bundle_id

    res = run_cli(tiny_bundle, *images, "--json", "--backend", "onnxruntime-cpu")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["image"] for r in rows] == images
    assert [r["text"] for r in rows] == [e.text for e in expected]
    assert all("tokens" not in r for r in rows)  # only with --tokens
    for r, e in zip(rows, expected):
        assert r["schema_version"] == SCHEMA_VERSION and r["bundle_id"] == bundle_id(tiny_bundle)
        assert r["backend"] == "onnxruntime-cpu"
        assert set(r["attributes"]) == set(ATTRIBUTE_KEYS)
        assert r["attributes"] == json.loads(json.dumps(e.attributes))
        assert r["error"] is None
        assert r["timings"]["batch"] == len(images)
        assert all(v == round(v, 1) for k, v in r["timings"].items() if k.endswith("_ms"))
    with_tokens = [json.loads(line) for line in run_cli(tiny_bundle, *images, "--json", "--tokens").stdout.splitlines()]
    assert [r["tokens"] for r in with_tokens] == [e.tokens for e in expected]


def test_json_lines_validate_against_the_bundle_schema(tiny_bundle, images, tmp_path):
    jsonschema = pytest.importorskip("jsonschema", reason="the dev extra installs jsonschema")
    schema = json.loads((tiny_bundle / "description.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    lines = []
    for extra in ([], ["--tokens"]):
        res = run_cli(tiny_bundle, images[0], broken, images[1], "--json", *extra)
        assert res.exit_code == 1, res.output
        lines += [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 6 and sum(r["error"] is not None for r in lines) == 2
    validator = jsonschema.Draft202012Validator(schema)
    for r in lines:
        validator.validate(r)
    # the schema is not a rubber stamp
    bad = dict(lines[0], timings={"total_ms": "fast"})
    assert not validator.is_valid(bad)
    assert not validator.is_valid({k: v for k, v in lines[0].items() if k != "bundle_id"})


def test_folders_globs_and_stdin(tiny_bundle, images, expected, tmp_path):
    import shutil

    folder = tmp_path / "crops" / "cam1"
    folder.mkdir(parents=True)
    for p in images:
        shutil.copy(p, folder)
    (folder / "notes.txt").write_text("not an image")
    want = [plain(folder / f"person{i}.png", e) for i, e in enumerate(expected)]
    res = run_cli(tiny_bundle, tmp_path / "crops", "--batch-size", "2")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == want
    res = run_cli(tiny_bundle, str(tmp_path / "crops" / "**" / "person[02].png"))
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [want[0], want[2]]
    res = run_cli(tiny_bundle, "-", stdin="\n".join(str(folder / f"person{i}.png") for i in (2, 1)) + "\n\n")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [want[2], want[1]]
    res = run_cli(tiny_bundle, str(tmp_path / "nothing-*.png"))
    assert res.exit_code == 2 and "nothing-*.png" in res.stderr


def test_results_stream_per_batch(tiny_bundle, images, tmp_path):
    """stdin with --batch-size 1: the first result is out before the second path is read."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "from runtime.cli import main; main()", str(tiny_bundle), "-",
                             "--batch-size", "1", "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(images[0] + "\n")
        proc.stdin.flush()
        first = proc.stdout.readline()  # blocks until the first batch is printed; stdin is still open
        assert first.startswith(images[0] + "\t")
        proc.stdin.write(images[1] + "\n")
        proc.stdin.close()
        assert proc.stdout.readline().startswith(images[1] + "\t")
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()


def test_missing_image_reported_others_printed(tiny_bundle, images, expected, tmp_path):
    missing = str(tmp_path / "ghost.png")
    res = run_cli(tiny_bundle, images[0], missing, images[1])
    assert res.exit_code == 1, res.output
    errs = res.stderr.splitlines()
    assert len([e for e in errs if e.startswith("error:")]) == 1
    err = next(e for e in errs if e.startswith("error:"))
    assert "ghost.png" in err and "input 1" in err
    assert res.stdout.splitlines() == [plain(images[0], expected[0]), plain(images[1], expected[1])]


def test_missing_image_json(tiny_bundle, images, tmp_path):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"not an image at all")
    res = run_cli(tiny_bundle, corrupt, images[2], "--json", "--tokens")
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


def test_options_max_new_tokens_and_batch_size(tiny_bundle, images, expected):
    res = run_cli(tiny_bundle, *images, "--json", "--tokens", "--max-new-tokens", "3", "--batch-size", "2")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 3
    # the first 3 greedy tokens are a prefix of the full run
    assert [r["tokens"] for r in rows] == [e.tokens[:3] for e in expected]
    assert [r["timings"]["batch"] for r in rows] == [2, 2, 1]
    assert all(r["timings"]["steps"] <= 3 for r in rows)


def test_requires_an_image(tiny_bundle):
    res = run_cli(tiny_bundle)
    assert res.exit_code == 2
    assert "IMAGES" in res.output or "Missing argument" in res.output

