"""``run_bench``: warm-up, then interleaved timed iterations of every backend on the same inputs."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .speed_runners import RUNTIME_VARIANTS, decoding_rows, precision_rows, split_row
from .speed_workers import Slot, WorkerRunner


@dataclass(frozen=True)
class BenchConfig:
    """Options of ``pvlm-bench``."""

    bundle: str | None = None
    preset: str | None = None
    checkpoint: str | None = None
    backends: tuple[str, ...] = ("torch-original", "onnxruntime-cpu")
    # Precisions to add rows for after each ONNX Runtime backend (``onnxruntime-cpu-int8``, ...);
    # ``("auto",)``: every precision the bundle holds (a --preset bundle is then FP32 only).
    precisions: tuple[str, ...] = ()
    # One row per decoding (``greedy``, ``beamsN``, ``sample``, ``original``) for every ONNX Runtime backend,
    # named ``onnxruntime-cpu+beams3``; each is compared with its backend's greedy row.
    decodings: tuple[str, ...] = ("greedy",)
    batches: tuple[int, ...] = (1, 32)
    new_tokens: int = 48
    natural: bool = False
    warmup: int = 1
    iters: int = 5
    threads: int | None = None
    token_sweep: tuple[int, ...] = ()
    sweep_backend: str = "onnxruntime-cpu"
    sweep_batch: int = 8
    descriptions_per_camera_s: float = 2.0
    # Idle gap before every timed call (seconds), so the previous backend's idle threads stop spinning
    # on the cores this one needs: every worker process keeps its own pool, and ONNX Runtime's (and
    # PyTorch's OpenMP) threads spin on after a call. Without it lite0's batch-32 encoder measured
    # 127-131 ms FP32 and 72-82 ms INT8 here; with 0.05-0.1 s, 90-97 and 43-48 ms, as when it runs alone.
    gap_s: float = 0.3
    # An untimed batch-1, 2-token call right before every timed call: the previous backend's
    # threads have stopped spinning and this one's are awake, as in a service that runs all day.
    settle: bool = True
    seed: int = 0
    progress: bool = True


# Fewest samples for a tail percentile to mean anything: at least one sample beyond it.
MIN_SAMPLES = {90: 10, 99: 100}


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def tail_percentile(values: list[float], q: int) -> float | None:
    """``percentile`` for q in ``MIN_SAMPLES``, or None with fewer samples than that (reports say how many)."""
    return percentile(values, q) if len(values) >= MIN_SAMPLES[q] else None


def machine_info(threads: int | None) -> dict[str, Any]:
    """CPU model, cores, threads, GPU and library versions, for the report."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    if shutil.which("nvidia-smi"):
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            gpu = None
    libs = {}
    for pkg in ("numpy", "onnxruntime", "onnxruntime-gpu", "torch", "timm", "tensorrt", "personvlm-toolkit"):
        try:
            libs[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "gpu": gpu, "python": platform.python_version(),
            "platform": platform.platform(), "libraries": libs}


def bench_inputs(image_size: tuple[int, int], n: int, mean: list[float], std: list[float], seed: int) -> np.ndarray:
    """Normalised synthetic person crops (the same for every backend)."""
    from pvlm.synth import synth_example
    from runtime.preprocess import preprocess

    return np.stack([preprocess(synth_example(seed, i, (256, 128), True)[0], *image_size, mean, std) for i in range(n)])


def _prepare_bundle(cfg: BenchConfig, workdir: Path, max_new_tokens: int) -> tuple[Path, Path | None]:
    """The bundle and checkpoint to use; with ``--preset``, a random-init model exported to ``workdir``."""
    if cfg.bundle:
        bundle = Path(cfg.bundle)
        checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else None
        if checkpoint is None:
            from runtime.bundle import Bundle, BundleError

            loaded = Bundle.load(bundle, verify=False)
            try:
                checkpoint = loaded.find_source_checkpoint()
            except BundleError:  # the baselines that need it are skipped
                checkpoint = None
        return bundle, checkpoint
    import torch

    import pvlm
    from export import export_onnx

    torch.manual_seed(cfg.seed)
    model_cfg = pvlm.PersonVLMConfig.preset(cfg.preset or "seed-7m")
    vocab = pvlm.Vocabulary(list(pvlm.vocab.SPECIALS) + [f"tok{i}" for i in range(model_cfg.vocab_size - 4)])
    checkpoint = pvlm.save_checkpoint(workdir / "model.pt", pvlm.PersonVLM(model_cfg).eval(), vocab, {"random_init": True})
    wanted = {p for p in cfg.precisions if p not in ("auto", "fp32")}
    options = [RUNTIME_VARIANTS[n][1] for n in cfg.backends if n in RUNTIME_VARIANTS]
    wanted |= {o["precision"] for o in options if "precision" in o}
    # Random weights make the variants' attribute agreement meaningless: their floor is not applied here.
    bundle = export_onnx(checkpoint, workdir / "bundle", max_batch=max(cfg.batches + (cfg.sweep_batch,)),
                         max_new_tokens=max_new_tokens, precisions=tuple(sorted(wanted)), accept_mismatch=True)
    return bundle, checkpoint


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Benchmark every backend at every batch size; returns the report (see ``bench.speed_report``)."""
    if not cfg.bundle and not cfg.preset:
        raise ValueError("give a BUNDLE or --preset")
    if not cfg.backends:
        raise ValueError("give at least one --backend")
    if cfg.iters < 1 or cfg.warmup < 0:
        raise ValueError("--iters must be >= 1 and --warmup >= 0")
    _check_decodings(cfg.decodings)
    max_tokens = max((cfg.new_tokens, *cfg.token_sweep))
    with tempfile.TemporaryDirectory(prefix="pvlm-bench-") as tmp:
        bundle, checkpoint = _prepare_bundle(cfg, Path(tmp), max_tokens)
        from runtime.bundle import Bundle

        b = Bundle.load(bundle, verify=False)
        precisions = b.precisions if "auto" in cfg.precisions else cfg.precisions
        missing = [p for p in precisions if p not in b.precisions]
        if missing:
            raise ValueError(f"{bundle}: the bundle has no {', '.join(missing)} graphs (it holds "
                             f"{', '.join(b.precisions)}); re-export it with pvlm-export onnx --{missing[0]}")
        cfg = replace(cfg, backends=decoding_rows(precision_rows(cfg.backends, precisions), cfg.decodings))
        pre = b.preprocessing
        max_batch = b.limits.max_batch
        if max(cfg.batches) > max_batch:
            raise ValueError(f"--batch {max(cfg.batches)} exceeds the bundle's max batch {max_batch}")
        if max_tokens > b.limits.max_new_tokens:
            raise ValueError(f"--new-tokens {max_tokens} exceeds the bundle's limit {b.limits.max_new_tokens}")
        pixels = bench_inputs((pre.height, pre.width), max(cfg.batches + (cfg.sweep_batch,)), list(pre.mean),
                              list(pre.std), cfg.seed)
        names = list(dict.fromkeys((*cfg.backends, *([cfg.sweep_backend] if cfg.token_sweep else []))))
        runners: dict[str, WorkerRunner] = {}
        try:
            for name in tqdm(names, desc="starting backends", disable=not cfg.progress, leave=False):
                runners[name] = WorkerRunner(name, bundle, checkpoint, cfg.threads, max_batch, max_tokens)
            results, sweep = _measure(cfg, runners, pixels)
        finally:
            for r in runners.values():
                r.close()
    report = {
        "config": {**asdict(cfg), "bundle": str(cfg.bundle) if cfg.bundle else None},
        "machine": machine_info(cfg.threads),
        "model": b.model_config.summary(("backbone", "visual_tokens", "image_size", "d_model", "n_layers",
                                           "vocab_size")),
        "results": {n: {str(k): v for k, v in per.items()} for n, per in results.items()},
        "token_sweep": sweep,
    }
    report["comparisons"] = compare(report, cfg)
    return report


def _check_decodings(decodings: tuple[str, ...]) -> None:
    """ValueError (one line) for a label ``DecodingOptions.parse`` does not know, or none at all."""
    from runtime.decoding import DecodingOptions

    if not decodings:
        raise ValueError("give at least one --decoding")
    for label in decodings:
        try:
            DecodingOptions.parse(label)
        except ValueError as e:
            raise ValueError(f"--decoding: {e}") from None


def _measure(cfg: BenchConfig, runners: dict[str, WorkerRunner], pixels: np.ndarray
             ) -> tuple[dict[str, dict[int, dict[str, Any]]], list[dict[str, Any]]]:
    """Warm-up, then interleaved timed iterations per batch size; then the optional token sweep."""
    stop_at_eos = cfg.natural  # natural: rows end at EOS; otherwise fixed work, new_tokens per row
    timed = {n: r for n, r in runners.items() if n in cfg.backends}
    results: dict[str, dict[int, dict[str, Any]]] = {n: {} for n in timed}
    total = len(cfg.batches) * (cfg.warmup + cfg.iters) * len(timed) + len(cfg.token_sweep)
    bar = tqdm(total=total, desc="benchmarking", disable=not cfg.progress, dynamic_ncols=True)
    for r in timed.values():
        r.load(Slot.SETTLE, pixels[:1])

    def prepare(r: WorkerRunner) -> None:
        time.sleep(cfg.gap_s)
        if cfg.settle:
            r.run_key(Slot.SETTLE, 2, stop_at_eos=False)

    for batch in cfg.batches:
        for r in timed.values():
            r.load(batch, pixels[:batch])
        for _ in range(cfg.warmup):
            for r in timed.values():
                prepare(r)
                r.run_key(batch, cfg.new_tokens, stop_at_eos)
                bar.update()
        samples: dict[str, list[Any]] = {n: [] for n in timed}
        rss: dict[str, int] = dict.fromkeys(timed, 0)
        for _ in range(cfg.iters):  # interleaved: drift hits every backend alike
            for name, r in timed.items():
                prepare(r)
                samples[name].append(r.run_key(batch, cfg.new_tokens, stop_at_eos))
                rss[name] = max(rss[name], r.last_peak_rss)
                bar.update()
        for name, runs in samples.items():
            results[name][batch] = summarize(runs, batch, rss[name], timed[name].last_device_bytes)
    sweep = []
    if cfg.token_sweep:
        r = runners[cfg.sweep_backend]
        r.load(Slot.TOKEN_SWEEP, pixels[: cfg.sweep_batch])
        for n in cfg.token_sweep:
            r.run_key(Slot.TOKEN_SWEEP, n, stop_at_eos=False)
            runs = [r.run_key(Slot.TOKEN_SWEEP, n, stop_at_eos=False) for _ in range(max(3, cfg.iters))]
            sweep.append({"new_tokens": n, "batch": cfg.sweep_batch,
                          "step_ms_p50": percentile([s.decode_ms / s.steps for s in runs], 50),
                          "decode_ms_p50": percentile([s.decode_ms for s in runs], 50)})
            bar.update()
    bar.close()
    return results, sweep


def summarize(runs: list[Any], batch: int, peak_rss: int, device_bytes: int | None) -> dict[str, Any]:
    """Median/tail latency, throughput and memory over timed runs of one backend at one batch size."""
    totals = [r.total_ms for r in runs]
    tokens = [r.n_tokens for r in runs]
    p50 = percentile(totals, 50)
    return {
        "batch": batch,
        "iters": len(runs),
        "encode_ms_p50": percentile([r.encode_ms for r in runs], 50),
        "step_ms_p50": percentile([r.decode_ms / max(1, r.steps) for r in runs], 50),
        "latency_ms_p50": p50,
        "latency_ms_p90": tail_percentile(totals, 90),
        "latency_ms_p99": tail_percentile(totals, 99),
        "images_per_s": batch / (p50 / 1e3),
        "tokens_per_s": float(np.median(tokens)) / (p50 / 1e3),
        "tokens": tokens,
        "peak_rss_mb": round(peak_rss / 2**20, 1),
        "peak_device_mb": None if device_bytes is None else round(device_bytes / 2**20, 1),
    }


def compare(report: dict[str, Any], cfg: BenchConfig) -> list[dict[str, Any]]:
    """Ratios of every greedy row against the first-named one, only where token counts match; and of every
    decoding row (``backend+beams3``) against its backend's greedy row (``decoding`` set), whatever the tokens."""
    base = cfg.backends[0]
    out = []
    for name in cfg.backends[1:]:
        backend, decoding = split_row(name)
        against = base if decoding == "greedy" else backend
        if against not in report["results"] or against == name:
            continue  # a decoding row whose backend has no greedy row
        for batch in cfg.batches:
            a, b = report["results"][against][str(batch)], report["results"][name][str(batch)]
            same = a["tokens"] == b["tokens"]
            ratio = same or decoding != "greedy"
            out.append({
                "backend": name, "baseline": against, "batch": batch, "tokens_match": same,
                "decoding": None if decoding == "greedy" else decoding,
                "throughput_x": b["images_per_s"] / a["images_per_s"] if ratio else None,
                "latency_x": a["latency_ms_p50"] / b["latency_ms_p50"] if ratio else None,
            })
    return out


__all__ = ["MIN_SAMPLES", "BenchConfig", "run_bench", "tail_percentile"]
