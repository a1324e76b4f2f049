"""``pvlm-describe-native`` goes on past a bad input, as ``pvlm-describe`` skips one (``on_error="skip"``): the
bad input gets its own ``error: input N (PATH): ...`` line, every other input is described, and the exit
status says that some failed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cli(native_cli: Path) -> Path:
    return native_cli


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> list[str]:
    from pvlm.synth import synth_example

    d = tmp_path_factory.mktemp("native-cli")
    paths = []
    for i in range(4):
        p = d / f"crop{i}.png"
        synth_example(5, i, (256, 128), True)[0].resize((40 + 10 * i, 90)).save(p)
        paths.append(str(p))
    return paths


def run(cli: Path, bundle: Path, *args: str) -> tuple[int, list[dict], list[str]]:
    proc = subprocess.run([str(cli), str(bundle), *args], capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr.splitlines()


def test_a_bad_input_fails_alone_and_the_others_go_on(cli, tiny_bundle, crops, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    dump = tmp_path / "dump"
    (dump / "5.f32").mkdir(parents=True)  # input 5's encoder input cannot be written: a failure of that input only
    paths = [crops[0], str(tmp_path / "notes.png"), crops[1], str(tmp_path / "absent.png"), crops[2], crops[3]]
    rc, lines, stderr = run(cli, tiny_bundle, *paths, "--batch-size", "2", "--dump-inputs", str(dump))
    assert rc == 1  # some inputs failed
    assert [line["image"] for line in lines] == paths
    failed = {1: "not a readable image", 3: "file not found", 5: f"cannot write {dump}/5.f32"}
    for i, line in enumerate(lines):
        if i in failed:
            assert line["error"].startswith(f"input {i} ({paths[i]}): {failed[i]}"), line["error"]
            assert line["tokens"] == [] and line["timings"] == {}
        else:
            assert line["error"] is None and line["tokens"], line
    assert stderr == [f"error: {lines[i]['error']}" for i in sorted(failed)]  # one line per bad input, in order
    assert sorted(p.name for p in dump.iterdir()) == ["0.f32", "2.f32", "4.f32", "5.f32"]

    rc, alone, _ = run(cli, tiny_bundle, crops[0], crops[1], crops[2], crops[3], "--batch-size", "2")
    assert rc == 0
    assert [line["tokens"] for line in alone[:3]] == [lines[i]["tokens"] for i in (0, 2, 4)] and alone[3]["tokens"]


def test_every_input_bad_exits_2(cli, tiny_bundle, tmp_path):
    rc, lines, stderr = run(cli, tiny_bundle, str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    assert rc == 2 and [line["error"] is not None for line in lines] == [True, True] and len(stderr) == 2
