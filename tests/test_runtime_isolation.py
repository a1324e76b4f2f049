"""``runtime`` never imports torch, timm or pvlm (docs/architecture.md: arrows point one way), and ``import runtime`` is light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")

HEAVY = ("torch", "timm", "pvlm", "export", "onnx", "onnxruntime")

PROBE = r"""
import json, sys
HEAVY = %r
report = {}
import runtime
report["after_import"] = sorted(m for m in HEAVY if m in sys.modules)
import numpy as np
from runtime import Describer
d = Describer(sys.argv[1], backend="onnxruntime-cpu")
rng = np.random.default_rng(0)
out = d.describe([rng.integers(0, 256, (80, 40, 3), dtype=np.uint8), "/nonexistent/x.png"], channel_order="rgb")
report["ok"] = [r.ok for r in out]
report["tokens"] = out[0].tokens
report["error"] = out[1].error
report["after_describe"] = sorted(m for m in HEAVY if m in sys.modules)
print("REPORT " + json.dumps(report))
""" % (HEAVY,)


@pytest.fixture(scope="module")
def probe(tiny_bundle, tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("iso")  # not the repo root: the installed packages are what counts
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tiny_bundle)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0][len("REPORT "):])


def test_import_runtime_is_light(probe):
    assert probe["after_import"] == []


def test_describing_never_imports_torch_or_pvlm(probe):
    loaded = set(probe["after_describe"])
    assert not loaded & {"torch", "timm", "pvlm", "export"}, loaded
    assert "onnxruntime" in loaded  # the probe really ran the backend


def test_subprocess_result_is_sane(probe):
    assert probe["ok"] == [True, False]
    assert probe["tokens"] and all(isinstance(t, int) for t in probe["tokens"])
    assert "input 1" in probe["error"] and "file not found" in probe["error"]
