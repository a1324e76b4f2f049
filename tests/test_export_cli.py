"""``pvlm-export onnx``: bad input is one ``error:`` line and exit 2; --force replaces; failures write nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402


def run_cli(*args: str):
    from export.cli import main

    return CliRunner().invoke(main, ["onnx", *map(str, args)])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name]


def test_missing_checkpoint(tmp_path):
    res = run_cli(tmp_path / "nope.pt", "--out", tmp_path / "b")
    assert res.exit_code == 2, res.output
    errs = error_lines(res)
    assert len(errs) == 1 and "nope.pt" in errs[0]
    assert "Traceback" not in res.output
    assert not (tmp_path / "b").exists()


def test_random_bytes_checkpoint(tmp_path):
    ck = tmp_path / "junk.pt"
    ck.write_bytes(os.urandom(4096))
    res = run_cli(ck, "--out", tmp_path / "b")
    assert res.exit_code == 2, res.output
    errs = error_lines(res)
    assert len(errs) == 1 and "junk.pt" in errs[0]
    assert "Traceback" not in res.output
    assert not (tmp_path / "b").exists() and leftovers(tmp_path) == []


def test_unsupported_checkpoint_version(tiny_checkpoint, tmp_path):
    blob = torch.load(tiny_checkpoint, weights_only=True)
    assert blob["version"] == 1  # the real one, so only the version differs below
    blob["version"] = 99
    ck = tmp_path / "future.pt"
    torch.save(blob, ck)
    res = run_cli(ck, "--out", tmp_path / "b")
    assert res.exit_code == 2, res.output
    errs = error_lines(res)
    assert len(errs) == 1 and "version" in errs[0] and "99" in errs[0]
    assert not (tmp_path / "b").exists()


def test_existing_output_without_force_is_untouched(tiny_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    (out / "sub").mkdir()
    (out / "sub" / "x.bin").write_bytes(b"\x00\x01")
    before = snapshot(out)
    res = run_cli(tiny_checkpoint, "--out", out)
    assert res.exit_code == 2, res.output
    errs = error_lines(res)
    assert len(errs) == 1 and "--force" in errs[0]
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_force_replaces_existing_output(tiny_checkpoint, tiny_bundle, tmp_path, monkeypatch):
    """--force over an existing directory: the whole pipeline (checks, parity, manifest, atomic swap) runs for
    real; only torch.onnx.export is replaced by a copy of the fixture's graphs of the same checkpoint (~15 s)."""
    import export.onnx as export_onnx_mod

    exported = []

    def copy_graph(module, spec, path, *args, **kwargs):
        exported.append(spec.file)
        shutil.copyfile(tiny_bundle / spec.file, path)

    monkeypatch.setattr(export_onnx_mod, "export_graph", copy_graph)
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)  # --force replaces only a bundle (or an empty folder): see test_pvlm_outdir.py
    (out / "stale.txt").write_text("old")
    res = run_cli(tiny_checkpoint, "--out", out, "--force", "--json", "--max-batch", "2", "--max-new-tokens", "4")
    assert res.exit_code == 0, res.output
    assert exported == ["encoder.onnx", "decoder.onnx"]
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "cross_ort.onnx", "decoder.onnx", "decoder_ort.onnx", "description.schema.json", "encoder.onnx",
        "manifest.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["limits"]["max_batch"] == 2 and manifest["limits"]["max_new_tokens"] == 4
    assert (out / manifest["source"]["checkpoint"]).resolve() == tiny_checkpoint.resolve()  # relative to the bundle
    assert manifest["source"]["checkpoint_absolute"] == str(tiny_checkpoint.resolve())
    # --json: stdout is the verification report alone; the bundle line goes to stderr
    assert res.stderr.rstrip("\n").splitlines()[-1].startswith(f"bundle: {out}")
    report = json.loads(res.stdout)
    assert report == manifest["verification"]
    assert report["failures"] == [] and report["parity"]["sequences_identical"] == report["parity"]["images"]
    assert leftovers(tmp_path) == []


def test_opset_below_minimum(tiny_checkpoint, tmp_path):
    res = run_cli(tiny_checkpoint, "--out", tmp_path / "b", "--opset", "11")
    assert res.exit_code == 2, res.output
    errs = error_lines(res)
    assert len(errs) == 1 and "opset" in errs[0] and "11" in errs[0]
    assert not (tmp_path / "b").exists()


def test_max_new_tokens_beyond_model(tiny_checkpoint, tmp_path):
    res = run_cli(tiny_checkpoint, "--out", tmp_path / "b", "--max-new-tokens", "65")
    assert res.exit_code == 2, res.output
    errs = error_lines(res)
    assert len(errs) == 1 and "max-new-tokens" in errs[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: file permissions are not enforced, chmod cannot make a dir unwritable")
def test_unwritable_parent(tiny_checkpoint, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        res = run_cli(tiny_checkpoint, "--out", parent / "b")
        assert res.exit_code == 2, res.output
        assert len(error_lines(res)) == 1
        assert "Traceback" not in res.output
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o700)


def test_validation_failure_exit_and_nothing_written(tiny_checkpoint, tiny_bundle, tmp_path, monkeypatch):
    import export.onnx as export_onnx_mod
    from export.validate import ParityReport

    monkeypatch.setattr(export_onnx_mod, "export_graph",
                        lambda module, spec, path, *a, **k: shutil.copyfile(tiny_bundle / spec.file, path))
    monkeypatch.setattr(export_onnx_mod, "check_parity", lambda *a, **k: (ParityReport(), ["forced failure"]))
    out = tmp_path / "b"
    res = run_cli(tiny_checkpoint, "--out", out)
    assert res.exit_code == 1, res.output
    assert "forced failure" in res.stderr
    assert "validation failed" in res.stderr and "no bundle written" in res.stderr
    assert not out.exists() and leftovers(tmp_path) == []
