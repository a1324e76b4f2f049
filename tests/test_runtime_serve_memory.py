"""``pvlm-serve``'s memory under large, highly compressible images: a batch holds one decoded
full-size image at a time, whatever the batch size (peak RSS of the real server process)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("pytriton", reason="pvlm-serve needs nvidia-pytriton (pip install -e '.[serve]')")
pytest.importorskip("tritonclient.grpc", reason="the tests call it with tritonclient[all] (pip install -e '.[serve]')")

from test_export_triton import free_ports  # noqa: E402 - shared helpers

SIDE = 4000  # 16 Mpx: under the server's default pixel limit; 48 MB once decoded to RGB
ROWS = 8


def proc_status_kb(pid: int, field: str) -> int:
    """``VmRSS``/``VmHWM`` of a process, in kB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def big_pngs(n: int) -> list[bytes]:
    """``n`` different SIDE x SIDE RGB PNGs of a few stripes each: tens of kB encoded, 48 MB decoded."""
    from PIL import Image

    out = []
    for i in range(n):
        a = np.zeros((SIDE, SIDE, 3), np.uint8)
        a[:, 100 * i: 100 * i + 400] = (200, 40 + 20 * i, 30)
        a[SIDE // 2:, :, 2] = 180
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak RSS")
def test_a_batch_of_large_images_holds_one_decoded_image_at_a_time(tiny_bundle, tmp_path):
    import tritonclient.grpc as grpcclient

    from runtime.serving.server import wait_ready

    images = big_pngs(ROWS)
    assert max(map(len, images)) < 2_000_000
    ports = free_ports(3)
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "runtime.serving.server", str(tiny_bundle), "--http-port", str(ports[0]), "--grpc-port",
           str(ports[1]), "--metrics-port", str(ports[2]), "--backend", "onnxruntime-cpu", "--threads", "1",
           "--max-batch", str(ROWS), "--triton-log", str(tmp_path / "t.log")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_ready(f"http://127.0.0.1:{ports[0]}", timeout_s=120, proc=proc, model="pvlm")
        time.sleep(0.5)
        try:
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        except OSError as e:
            pytest.skip(f"cannot reset the peak RSS of the server: {e}")
        rss0 = proc_status_kb(proc.pid, "VmRSS")
        inp = grpcclient.InferInput("IMAGE", [ROWS, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b] for b in images], dtype=np.object_))
        with grpcclient.InferenceServerClient(f"127.0.0.1:{ports[1]}") as c:
            res = c.infer("pvlm", [inp], client_timeout=120)  # one batch of ROWS rows
        assert [e.decode() for e in res.as_numpy("ERROR")[:, 0]] == [""] * ROWS
        assert all(t.decode() for t in res.as_numpy("TEXT")[:, 0])
        growth_mb = (proc_status_kb(proc.pid, "VmHWM") - rss0) / 1024
    finally:
        proc.terminate()
        proc.wait(60)
    one_mb = SIDE * SIDE * 3 / 2**20
    print(f"peak RSS growth for one batch of {ROWS} {SIDE}x{SIDE} PNGs: {growth_mb:.0f} MB "
          f"(one decoded image: {one_mb:.0f} MB)")
    assert growth_mb < 2.5 * one_mb, f"{growth_mb:.0f} MB: more than one decoded image held at a time"
