"""``pvlm-bench --server URL --concurrency 1 8 32``: latency and throughput of a running ``pvlm-serve``.

Closed-loop load, like Triton's ``perf_analyzer --concurrency-range``: at each concurrency C, C client
threads (one tritonclient each) send one image per request and send the next as soon as the answer
arrives, until a fixed number of requests has been answered.
"""

from __future__ import annotations

import io
import platform
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
from tqdm import tqdm

from .speed import machine_info, percentile, tail_percentile

MODEL_NAME = "pvlm"  # runtime.serving.server.MODEL_NAME (not imported: that module is the server side)


@dataclass(frozen=True)
class LoadConfig:
    """Options of ``pvlm-bench --server``."""

    url: str
    concurrency: tuple[int, ...] = (1, 8, 32)
    requests: int = 64  # answered requests per concurrency level (at least the concurrency)
    timeout_s: float = 120.0
    model: str = MODEL_NAME
    seed: int = 0
    progress: bool = True


def _client_factory(url: str, timeout_s: float) -> tuple[str, Any]:
    """``http://host:port`` or ``grpc://host:port`` -> (protocol, zero-argument client constructor)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "grpc") or not parsed.hostname or parsed.path not in ("", "/"):
        raise ValueError(f"--server: expected http://HOST:PORT or grpc://HOST:PORT, got {url!r}")
    host = f"{parsed.hostname}:{parsed.port or (8001 if parsed.scheme == 'grpc' else 8000)}"
    if parsed.scheme == "grpc":
        import tritonclient.grpc as grpcclient

        return "grpc", lambda: grpcclient.InferenceServerClient(host)
    import tritonclient.http as httpclient

    return "http", lambda: httpclient.InferenceServerClient(host, connection_timeout=timeout_s,
                                                             network_timeout=timeout_s)


def make_payloads(n: int, seed: int = 0, size: tuple[int, int] = (128, 64)) -> list[bytes]:
    """``n`` JPEG-encoded synthetic person crops (``pvlm.synth``, torch-free)."""
    from pvlm.synth import render_person, sample_attributes

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        render_person(sample_attributes(rng), rng, size=size).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _describe_call(protocol: str, model: str, timeout_s: float) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc

    def call(client: Any, data: bytes) -> str:
        inp = tc.InferInput("IMAGE", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        kw = {"client_timeout": timeout_s} if protocol == "grpc" else {}
        res = client.infer(model, [inp], **kw)
        return res.as_numpy("ERROR")[0, 0].decode()

    return call


def run_level(new_client: Any, call: Any, payloads: list[bytes], concurrency: int, n_requests: int) -> dict[str, Any]:
    """``n_requests`` requests from ``concurrency`` threads, closed loop; latencies in ms and wall time.

    Each thread makes, warms up (one untimed request) and closes its own client: tritonclient's HTTP
    client runs on gevent, whose connections cannot move between threads.
    """
    next_index = iter(range(n_requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    ready = threading.Barrier(concurrency + 1)

    def worker(k: int) -> None:
        client = None
        try:
            client = new_client()
            call(client, payloads[k % len(payloads)])  # warm-up: connected, the server's batcher awake
        except Exception as e:  # noqa: BLE001 - reported below, the barrier must still be reached
            with lock:
                errors.append(f"warm-up: {type(e).__name__}: {e}")
        ready.wait()
        try:
            while client is not None:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    err = call(client, payloads[i % len(payloads)])
                except Exception as e:  # noqa: BLE001 - a failed request is counted, the load goes on
                    err = f"{type(e).__name__}: {e}"
                ms = (time.perf_counter() - t0) * 1e3
                with lock:
                    if err:
                        errors.append(err)
                    else:
                        latencies.append(ms)
        finally:
            if client is not None:
                client.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return {"latencies_ms": latencies, "errors": errors, "wall_s": time.perf_counter() - t0}


def run_server_load(cfg: LoadConfig) -> dict[str, Any]:
    """Every concurrency level in turn (a warm-up round each); returns the report."""
    if not cfg.concurrency or min(cfg.concurrency) < 1:
        raise ValueError("--concurrency values must be >= 1")
    if cfg.requests < 1:
        raise ValueError("--requests must be >= 1")
    protocol, new_client = _client_factory(cfg.url, cfg.timeout_s)
    probe = new_client()
    try:
        if not probe.is_model_ready(cfg.model):
            raise ValueError(f"{cfg.url}: model {cfg.model!r} is not ready")
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - connection refused and friends, in the client's own types
        raise ValueError(f"{cfg.url}: no pvlm-serve answering ({type(e).__name__})") from None
    finally:
        probe.close()
    call = _describe_call(protocol, cfg.model, cfg.timeout_s)
    payloads = make_payloads(32, cfg.seed)
    results: dict[str, Any] = {}
    for c in tqdm(cfg.concurrency, desc="server load", unit="level", disable=not cfg.progress, leave=False):
        n = max(cfg.requests, c)
        level = run_level(new_client, call, payloads, c, n)
        lat = level["latencies_ms"]
        results[str(c)] = {
            "concurrency": c, "requests": n, "answered": len(lat), "errors": len(level["errors"]),
            "first_error": level["errors"][0] if level["errors"] else None, "wall_s": level["wall_s"],
            "latency_ms_p50": percentile(lat, 50) if lat else None,
            "latency_ms_p90": tail_percentile(lat, 90) if lat else None,
            "latency_ms_p99": tail_percentile(lat, 99) if lat else None,
            "images_per_s": len(lat) / level["wall_s"] if level["wall_s"] > 0 else None,
        }
    machine = machine_info(None)
    machine["client_host"] = platform.node()
    return {"mode": "server", "config": asdict(cfg), "protocol": protocol, "machine": machine, "results": results}


SERVER_COLUMNS = ("concurrency", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "img/s")


def server_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per concurrency level."""
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    return [[str(r["concurrency"]), str(r["requests"]), str(r["errors"]), ms(r["latency_ms_p50"]),
             ms(r["latency_ms_p90"]), ms(r["latency_ms_p99"]), ms(r["images_per_s"])]
            for r in report["results"].values()]


def server_table(report: dict[str, Any]) -> str:
    """Fixed-width console table, with a note where there are too few requests for p90/p99."""
    from .speed import MIN_SAMPLES

    data = [list(SERVER_COLUMNS)] + server_rows(report)
    widths = [max(len(r[i]) for r in data) for i in range(len(SERVER_COLUMNS))]
    lines = [f"{report['config']['url']} ({report['protocol']}), model {report['config']['model']!r}"]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in data]
    answered = [r["answered"] for r in report["results"].values()]
    short = [q for q, n in MIN_SAMPLES.items() if answered and min(answered) < n]
    if short:
        lines.append("; ".join(f"p{q} needs >= {MIN_SAMPLES[q]} answered requests" for q in short)
                     + f" (have {min(answered)} at the smallest level; raise --requests)")
    for r in report["results"].values():
        if r["first_error"]:
            lines.append(f"concurrency {r['concurrency']}: {r['errors']} failed, first: {r['first_error']}")
    return "\n".join(lines)


def server_csv(report: dict[str, Any]) -> str:
    """``--csv`` in server mode: one row per concurrency level."""
    import csv

    keys = ("concurrency", "requests", "answered", "errors", "wall_s", "latency_ms_p50", "latency_ms_p90",
            "latency_ms_p99", "images_per_s")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in report["results"].values():
        w.writerow(["" if r[k] is None else r[k] for k in keys])
    return buf.getvalue()


__all__ = ["LoadConfig", "make_payloads", "run_level", "run_server_load", "server_csv", "server_rows", "server_table"]
