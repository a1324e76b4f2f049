"""``runtime.atomic``: a file or directory appears whole or not at all; a failure leaves no temp behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runtime.atomic import atomic_dir, atomic_path, rename_into_place, temp_dir_beside, write_json, write_text


def test_write_json_and_text_replace_whole_files(tmp_path: Path) -> None:
    path = write_json(tmp_path / "sub" / "r.json", {"a": "\u00e9"}, ensure_ascii=False)
    assert path.read_text(encoding="utf-8") == '{\n  "a": "\u00e9"\n}\n'
    write_json(path, {"b": 1}, indent=None)
    assert path.read_text() == '{"b": 1}\n'
    write_text(path, "plain")
    assert path.read_text() == "plain"
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = write_text(tmp_path / "r.txt", "old")
    with pytest.raises(TypeError):
        write_json(path, {"x": object()})  # fails while serialising: nothing is opened
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.txt"]


def test_atomic_path_hands_a_sibling_to_path_writers(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "m.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".m.bin.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"\x00\x01")
    assert (tmp_path / "m.bin").read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["m.bin"]


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
        assert not out.exists()
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        assert tmp.stat().st_mode & 0o777 == 0o755
        (tmp / "a").write_text("1")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "a").read_text() == "1"


def test_default_swap_takes_only_an_absent_or_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with atomic_dir(out) as tmp:  # an empty directory is replaced
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(FileExistsError, match="already exists"), atomic_dir(out) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError):
        rename_into_place(temp_dir_beside(tmp_path / "g"), tmp_path / "f")


def test_custom_swap_sees_the_path_as_given(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    seen = []
    with atomic_dir("rel", swap=lambda tmp, out: seen.append((tmp.exists(), out))):
        pass
    assert seen == [(True, Path("rel"))]
    assert list(tmp_path.iterdir()) == []  # the swap did not take it: the temp is still removed


def test_json_round_trips(tmp_path: Path) -> None:
    obj = {"k": [1, 2.5, None, "x"], "n": {"m": True}}
    assert json.loads(write_json(tmp_path / "o.json", obj).read_text()) == obj
