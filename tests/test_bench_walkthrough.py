"""The main-job command end to end on a miniature configuration (tiny preset, 64 images, 1 epoch)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from bench.walkthrough import main


def test_quickstart_runs_every_stage(tmp_path):
    out = tmp_path / "qs"
    res = CliRunner().invoke(main, ["--out", str(out), "--n", "64", "--test-n", "8", "--epochs", "1", "--preset", "tiny",
                                    "--bench-iters", "1"])
    assert res.exit_code == 0, res.output
    for stage in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6", "done in", "parity onnxruntime-cpu vs PyTorch FP32: exact sequences 100.0%"):
        assert stage in res.output
    assert (out / "train" / "best.pt").is_file() and (out / "bundle" / "manifest.json").is_file()
    html = (out / "eval.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 8
    ev = json.loads((out / "eval.json").read_text())
    assert ev["n_images"] == 8 and ev["parity"]["backends"]["onnxruntime-cpu"]["exact_match_rate"] == 1.0
    bench = json.loads((out / "bench.json").read_text())
    assert set(bench["results"]) == {"torch-original", "torch", "onnxruntime-cpu"}
    assert all(c["tokens_match"] for c in bench["comparisons"])


def test_quickstart_refuses_existing_output(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    res = CliRunner().invoke(main, ["--out", str(tmp_path)])
    assert res.exit_code == 2 and "already exists" in res.output
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_quickstart_synth_step_follows_priors(tmp_path):
    """Every split is drawn with --priors: street by default, uniform as the original recipe."""
    from bench.walkthrough import _synth
    from pvlm.synth import synth_example

    for priors in ("street", "uniform"):
        root = tmp_path / priors
        root.mkdir()
        data, test, same = _synth(root, 8, 4, (64, 32), (48, 32), priors)
        for path, seed, size in ((data["train"], 0, (48, 32)), (test["data"], 12345, (64, 32)),
                                 (same["data"], 12345, (48, 32))):
            for row in map(json.loads, path.read_text().splitlines()):
                _, attrs, text = synth_example(seed, row["id"], size, priors=priors)
                assert row["attributes"] == attrs and row["answer"] == text
    assert "--priors [street|uniform]" in CliRunner().invoke(main, ["--help"]).output
