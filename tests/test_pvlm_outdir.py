"""``--force`` replaces only our own outputs (or an empty directory), for every command that has it;
unwritable outputs are named by the user's path; a failed run removes only the directories it created."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from pvlm.outdir import (
    OutputError,
    check_replaceable,
    is_bundle,
    is_quickstart_dir,
    is_synth_dataset,
    is_triton_repo,
    removed_if_unused,
    set_aside,
)


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(d.rglob("*"))}


def precious(d: Path) -> Path:
    """A user's folder: a note and a sub-folder (what --force used to delete without a word)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "notes.txt").write_text("precious")
    (d / "sub").mkdir()
    (d / "sub" / "x.bin").write_bytes(b"\x00\x01")
    return d


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_refused(res, out: Path, before: dict[str, bytes]) -> None:
    assert res.exit_code == 2, res.output
    errs = error_lines(res)
    assert len(errs) == 1 and str(out) in errs[0] and "--force only replaces" in errs[0], res.output
    assert "Traceback" not in res.output
    assert snapshot(out) == before


# --------------------------------------------------------------------------- the rule itself


def test_rule_absent_empty_ours_and_other(tmp_path):
    ours = lambda d: (d / "mine").is_file()  # noqa: E731
    check_replaceable(tmp_path / "absent", False, ours, "a thing")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", False, ours, "a thing")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mine").write_text("")
    with pytest.raises(OutputError, match="use --force"):
        check_replaceable(tmp_path / "mine", False, ours, "a thing")
    check_replaceable(tmp_path / "mine", True, ours, "a thing")
    other = precious(tmp_path / "other")
    with pytest.raises(OutputError, match="not a thing"):
        check_replaceable(other, True, ours, "a thing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        check_replaceable(tmp_path / "file", True, ours, "a thing")
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    with pytest.raises(OutputError, match="not a directory"):
        check_replaceable(tmp_path / "link", True, ours, "a thing")


def test_recognisers(tmp_path):
    assert not is_bundle(precious(tmp_path / "p"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text(json.dumps({"format": "someone-else"}))
    assert not is_bundle(tmp_path / "b")
    (tmp_path / "b" / "manifest.json").write_text(json.dumps({"format": "pvlm-bundle"}))
    assert is_bundle(tmp_path / "b")
    d = tmp_path / "d"
    (d / "images").mkdir(parents=True)
    (d / "images" / "000000.png").write_bytes(b"")
    (d / "train.jsonl").write_text("")
    assert is_synth_dataset(d)
    (d / "notes.txt").write_text("mine")
    assert not is_synth_dataset(d)
    r = tmp_path / "r"
    (r / "pvlm_encoder").mkdir(parents=True)
    (r / "pvlm_encoder" / "config.pbtxt").write_text("")
    assert is_triton_repo(r)
    (r / "models").mkdir()
    assert not is_triton_repo(r)
    q = tmp_path / "q"
    q.mkdir()
    (q / "data").symlink_to(d)
    assert not is_quickstart_dir(q)  # a symlink, and a dataset with a foreign file in it
    (q / "data").unlink()
    (q / "bench.md").write_text("")
    (q / "train").mkdir()
    (q / "train" / "best.pt").write_bytes(b"")
    assert is_quickstart_dir(q)
    (q / "train" / "thesis.tex").write_text("")
    assert not is_quickstart_dir(q)


def test_set_aside_restores_on_failure(tmp_path):
    out = precious(tmp_path / "out")
    before = snapshot(out)
    with pytest.raises(RuntimeError), set_aside(out):
        assert not out.exists()
        raise RuntimeError("writer failed")
    assert snapshot(out) == before
    with set_aside(out):
        out.mkdir()
        (out / "new").write_text("new")
    assert snapshot(out) == {"new": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_removed_if_unused_only_removes_what_it_created_and_is_empty(tmp_path):
    with pytest.raises(KeyboardInterrupt), removed_if_unused(tmp_path / "a" / "b"):
        (tmp_path / "a" / "b").mkdir(parents=True)
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError), removed_if_unused(tmp_path / "c"):
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "best.pt").write_bytes(b"kept")
        raise ValueError
    assert (tmp_path / "c" / "best.pt").read_bytes() == b"kept"
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(ValueError), removed_if_unused(existing):
        raise ValueError
    assert existing.is_dir()


# --------------------------------------------------------------------------- every command with --force


def test_export_onnx_force_refuses_a_foreign_directory(tiny_checkpoint, tmp_path):
    """A real checkpoint: refused before any export work (it used to export, then replace the folder)."""
    from export.cli import main

    out = precious(tmp_path / "out")
    before = snapshot(out)
    res = CliRunner().invoke(main, ["onnx", str(tiny_checkpoint), "--out", str(out), "--force"])
    assert_refused(res, out, before)


def test_export_onnx_force_refuses_the_working_directory(tiny_checkpoint, tmp_path, monkeypatch):
    from export.cli import main

    work = precious(tmp_path / "work")
    before = snapshot(work)
    monkeypatch.chdir(work)
    res = CliRunner().invoke(main, ["onnx", str(tiny_checkpoint), "--out", ".", "--force"])
    assert_refused(res, Path("."), before)


def test_force_refuses_a_file(tmp_path):
    from export.cli import main
    from pvlm.cli_data import main as data_main

    out = tmp_path / "out"
    out.write_text("not a directory")
    res = CliRunner().invoke(main, ["onnx", str(tmp_path / "x.pt"), "--out", str(out), "--force"])
    assert res.exit_code == 2, res.output  # click's own check (file_okay=False)
    res = CliRunner().invoke(data_main, ["synth", "--out", str(out), "--n", "2", "--force", "--quiet"])
    assert res.exit_code == 2 and len(error_lines(res)) == 1 and "not a directory" in res.output, res.output
    assert out.read_text() == "not a directory"


def test_export_triton_force_refuses_a_foreign_directory(tiny_bundle, tmp_path):
    pytest.importorskip("onnxruntime")
    from export.cli import main

    out = precious(tmp_path / "repo")
    before = snapshot(out)
    res = CliRunner().invoke(main, ["triton", str(tiny_bundle), "--out", str(out), "--force"])
    assert_refused(res, out, before)


def test_export_triton_force_replaces_its_own_repository(tiny_bundle, tmp_path):
    pytest.importorskip("onnxruntime")
    from export.cli import main

    out = tmp_path / "repo"
    assert CliRunner().invoke(main, ["triton", str(tiny_bundle), "--out", str(out)]).exit_code == 0
    res = CliRunner().invoke(main, ["triton", str(tiny_bundle), "--out", str(out), "--force", "--max-batch", "2"])
    assert res.exit_code == 0, res.output
    assert "max_batch_size: 2" in (out / "pvlm_describer" / "config.pbtxt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_data_synth_force_refuses_a_foreign_directory_and_replaces_a_dataset(tmp_path):
    from pvlm.cli_data import main

    out = precious(tmp_path / "data")
    before = snapshot(out)
    res = CliRunner().invoke(main, ["synth", "--out", str(out), "--n", "4", "--force", "--quiet"])
    assert_refused(res, out, before)

    ds = tmp_path / "ds"
    args = ["synth", "--out", str(ds), "--n", "4", "--size", "64x32", "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    res = CliRunner().invoke(main, [*args[:3], "--n", "6", *args[5:], "--force"])
    assert res.exit_code == 0, res.output
    assert len(list((ds / "images").iterdir())) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ds"]


def test_quickstart_force_refuses_a_foreign_directory(tmp_path):
    pytest.importorskip("onnxruntime")
    from bench.walkthrough import main

    out = precious(tmp_path / "qs")
    (out / "data").mkdir()  # a name quickstart uses, holding something else
    (out / "data" / "survey.csv").write_text("a,b\n")
    before = snapshot(out)
    res = CliRunner().invoke(main, ["--out", str(out), "--force"])
    assert_refused(res, out, before)


# --------------------------------------------------------------------------- unwritable outputs


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc (a directory nobody can create in)")
def test_unwritable_out_is_named_by_the_users_path(tiny_checkpoint, tiny_bundle):
    from export.cli import main

    for args in (["onnx", str(tiny_checkpoint)], ["triton", str(tiny_bundle)]):
        res = CliRunner().invoke(main, [*args, "--out", "/proc/pvlm-out"])
        assert res.exit_code == 2, res.output
        errs = error_lines(res)
        assert len(errs) == 1 and "/proc/pvlm-out: cannot write there" in errs[0], res.output
        assert ".tmp-" not in res.output


# --------------------------------------------------------------------------- interrupted training


def test_failed_or_interrupted_training_leaves_no_empty_output(synth_dir, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import pvlm.train as train_mod

    out = tmp_path / "runs" / "t"
    with pytest.raises((FileNotFoundError, ValueError)):
        train_mod.train(train_mod.TrainConfig(train=str(tmp_path / "missing.jsonl"), out=str(out), preset="tiny"))
    assert list(tmp_path.iterdir()) == []

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "CaptionDataset", interrupted)  # Ctrl-C while the data loads
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(train_mod.TrainConfig(train=str(synth_dir / "train.jsonl"), out=str(out), preset="tiny"))
    assert list(tmp_path.iterdir()) == []
    out.mkdir(parents=True)  # the user's existing (empty) folder stays
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(train_mod.TrainConfig(train=str(synth_dir / "train.jsonl"), out=str(out), preset="tiny"))
    assert out.is_dir()


def test_swap_in_over_the_working_directory(tmp_path, monkeypatch):
    """``--out . --force`` inside one of our bundles: the temp folder goes beside it, not inside it."""
    from pvlm.outdir import swap_in
    from runtime.atomic import temp_dir_beside

    work = tmp_path / "w"
    work.mkdir()
    (work / "manifest.json").write_text(json.dumps({"format": "pvlm-bundle"}))
    monkeypatch.chdir(work)
    tmp = temp_dir_beside(".")
    assert tmp.parent == tmp_path
    (tmp / "manifest.json").write_text(json.dumps({"format": "pvlm-bundle", "new": 1}))
    swap_in(tmp, ".", force=True, is_ours=is_bundle, what="an export bundle")
    monkeypatch.chdir(tmp_path)
    assert json.loads((work / "manifest.json").read_text())["new"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_building_swaps_in_under_the_force_rule(tmp_path):
    """``building``: the temp folder goes beside ``out``; it replaces only what ``--force`` allows, else vanishes."""
    from pvlm.outdir import OutputExistsError, building

    out = tmp_path / "bundle"
    with building(out, force=False, is_ours=is_bundle, what="an export bundle") as tmp:
        assert tmp.parent == tmp_path and not out.exists()
        (tmp / "manifest.json").write_text(json.dumps({"format": "pvlm-bundle"}))
    assert json.loads((out / "manifest.json").read_text()) == {"format": "pvlm-bundle"}
    with pytest.raises(OutputExistsError, match="use --force"):
        with building(out, force=False, is_ours=is_bundle, what="an export bundle") as tmp:
            (tmp / "manifest.json").write_text(json.dumps({"format": "pvlm-bundle", "new": 1}))
    with building(out, force=True, is_ours=is_bundle, what="an export bundle") as tmp:
        (tmp / "manifest.json").write_text(json.dumps({"format": "pvlm-bundle", "new": 1}))
    assert json.loads((out / "manifest.json").read_text())["new"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_building_names_the_users_path_when_it_cannot_write(tmp_path):
    """A file where the parent folder should be: an OutputError naming ``out`` (works as root too)."""
    from pvlm.outdir import building

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"file/out: cannot write there"):
        with building(tmp_path / "file" / "out", force=False, is_ours=is_bundle, what="an export bundle"):
            pass
