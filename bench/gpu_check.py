"""``python -m bench.gpu_check``: every check that needs an NVIDIA GPU, in one command and one JSON report.

On a machine with an NVIDIA GPU, within ``--budget-s`` (7.5 minutes by default), for each ``--preset``
(a random-init model exported here with its FP16 variant) or a given ``--bundle``:

- ``pytest``: the tests that skip without a GPU (``pytest -m "gpu or tensorrt"``, plus the CUDA tests
  listed in :data:`EXTRA_GPU_TESTS`);
- ``trt-build``: ``pvlm-export trt --fp16`` and ``pvlm-export trt`` where TensorRT imports, and, on
  TensorRT 10, the weakly typed FP16 build into a copy of the bundle;
- ``trt-parity``: the ``tensorrt`` backend's greedy ids against ONNX Runtime CPU, per engine set;
- ``ort-cuda``: ONNX Runtime CUDA, portable ``decoder.onnx`` and ``decoder_ort`` with the shared cache
  buffer, against ONNX Runtime CPU (what ``VERIFIED_DEVICES`` in ``runtime/backends/ort_bound.py`` waits on);
- ``tensorrt-rtx-ep``: ONNX Runtime's TensorRT-RTX execution provider, where its plugin package
  (``onnxruntime-ep-nv-tensorrt-rtx``) is installed and sees a device;
- ``bench``: ``pvlm-bench`` of every GPU backend against a ``torch`` baseline, plus PyTorch on CUDA
  timed the same way (warm-up, synchronised timed iterations, median).

Without a GPU every step runs up to where it needs one and is recorded as skipped, with the reason;
a step whose turn comes after the budget is spent is skipped too. The report is written in every
case; the exit status is 1 when a step failed. ``docs/hardware.md`` says what to install or carry.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from runtime.atomic import write_json

FORMAT = "pvlm-gpu-check"
DEFAULT_BUDGET_S = 450.0
DEFAULT_PRESETS = ("tiny", "lite0")
# CUDA tests that skip on CPU but carry no gpu marker.
EXTRA_GPU_TESTS = ("tests/test_export_ort_decoder.py::test_cuda_cache_stays_on_the_device",)
PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu12", "tensorrt-cu13",
            "polygraphy", "cuda-python", "cuda-bindings", "onnxruntime-ep-nv-tensorrt-rtx-cu12",
            "onnxruntime-ep-nv-tensorrt-rtx-cu13", "timm")
PARITY_IMAGES = 32
TESTS = Path(__file__).resolve().parents[1] / "tests"
FP32_FLOOR = 0.97  # identical greedy sequences, FP32 engine or CUDA session against ONNX Runtime CPU


class Skip(Exception):
    """A step that cannot run here; the message says why."""


@dataclass
class Step:
    """One check: passed, failed or skipped, how long it took, why, and what it measured."""

    name: str
    status: str
    seconds: float
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What the steps share: the machine, the time budget, the bundles and what was built."""

    budget_s: float
    work: Path
    batches: tuple[int, ...] = (1, 8)
    new_tokens: int = 24
    iters: int = 5
    env: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)

    def left(self) -> float:
        """Seconds of the budget still left."""
        return self.budget_s - (time.monotonic() - self.started)

    def run(self, name: str, fn: Callable[[], dict[str, Any] | None], needs_s: float = 0.0) -> Step:
        """Run one step unless the budget is spent; record it (a Skip or an error does not stop the check)."""
        t0 = time.monotonic()
        if self.left() < needs_s:
            step = Step(name, "skipped", 0.0, f"time budget spent ({max(self.left(), 0):.0f} s left, "
                                               f"the step needs about {needs_s:.0f} s)")
        else:
            try:
                step = Step(name, "passed", 0.0, data=fn() or {})
            except Skip as e:
                step = Step(name, "skipped", 0.0, str(e))
            except Failed as e:
                step = Step(name, "failed", 0.0, str(e), e.data)
            except Exception as e:  # noqa: BLE001 - any error is this step's result; the others still run
                step = Step(name, "failed", 0.0, f"{type(e).__name__}: {e}",
                            {"traceback": traceback.format_exc()[-4000:]})
        step.seconds = round(time.monotonic() - t0, 2)
        self.steps.append(step)
        click.echo(f"  {'✓' if step.status == 'passed' else '✗' if step.status == 'failed' else '-'} "
                   f"{name} ({step.seconds:.1f} s){': ' + step.reason if step.reason else ''}", err=True)
        return step

    def passed(self, name: str) -> bool:
        """Whether the last step called ``name`` passed."""
        return any(s.name == name and s.status == "passed" for s in reversed(self.steps))


class Failed(Exception):
    """A step that ran and found a problem; carries what it measured."""

    def __init__(self, message: str, data: dict[str, Any]):
        super().__init__(message)
        self.data = data


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Python, packages, ONNX Runtime providers, the GPU as cuda-python, PyTorch and nvidia-smi see it."""
    from export.trt import gpu_properties

    gpu = gpu_properties()
    providers: list[str] = []
    try:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    except ImportError:
        pass
    torch_cuda, torch_gpu = False, None
    try:
        import torch

        torch_cuda = bool(torch.cuda.is_available())
        torch_gpu = torch.cuda.get_device_name(0) if torch_cuda else None
    except ImportError:
        pass
    smi = None
    if shutil.which("nvidia-smi"):
        try:
            query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            smi = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            smi = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count(),
            "packages": {p: v for p in PACKAGES if (v := _version(p))},
            "onnxruntime_providers": providers, "gpu": gpu and {"name": gpu[0], "compute_capability": gpu[1]},
            "torch_cuda": torch_cuda, "torch_gpu": torch_gpu, "nvidia_smi": smi,
            "has_gpu": bool(gpu or torch_cuda)}


def export_preset(preset: str, work: Path, max_batch: int, new_tokens: int) -> tuple[Path, Path]:
    """A random-init ``preset`` model, saved and exported with its FP16 variant; returns (bundle, checkpoint)."""
    import torch

    import pvlm
    from export import export_onnx

    torch.manual_seed(0)
    cfg = pvlm.PersonVLMConfig.preset(preset)
    specials = list(pvlm.vocab.SPECIALS)
    vocab = pvlm.Vocabulary(specials + [f"tok{i}" for i in range(cfg.vocab_size - len(specials))])
    out = work / preset
    out.mkdir(parents=True, exist_ok=True)
    model = pvlm.PersonVLM(cfg, load_pretrained=False).eval()
    checkpoint = pvlm.save_checkpoint(out / "model.pt", model, vocab, {"random_init": True})
    # random weights make the FP16 variant's attribute agreement meaningless: its floor is not applied
    bundle = export_onnx(checkpoint, out / "bundle", max_batch=max_batch, max_new_tokens=new_tokens,
                         precisions=("fp16",), accept_mismatch=True)
    return Path(bundle), Path(checkpoint)


def parse_junit(text: str) -> dict[str, Any]:
    """Counts, failures (with their messages) and skip reasons from a pytest ``--junitxml`` report."""
    root = ET.fromstring(text)
    cases = root.iter("testcase")
    out: dict[str, Any] = {"passed": 0, "failed": [], "skipped": {}}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            out["failed"].append({"test": name, "message": (bad.get("message") or "")[:500]})
        elif skipped is not None:
            out["skipped"][name] = (skipped.get("message") or "")[:300]
        else:
            out["passed"] += 1
    return out


def _pytest(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], capture_output=True,
                          text=True, timeout=max(timeout, 10), cwd=TESTS.parent,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def marked_test_files(tests: Path = TESTS) -> list[str]:
    """Test modules with a ``gpu`` or ``tensorrt`` mark (collecting only them needs none of the other extras)."""
    return sorted(str(p) for p in tests.glob("test_*.py")
                  if re.search(r"mark\.(gpu|tensorrt)\b|needs_trt", p.read_text(encoding="utf-8")))


def pytest_step(ctx: Context) -> dict[str, Any]:
    """The GPU/TensorRT-marked tests (collected only, without a GPU)."""
    marked = ["-m", "gpu or tensorrt", *marked_test_files()]
    if not ctx.env["has_gpu"]:
        res = _pytest([*marked, "--collect-only", "-q"], ctx.left())
        selected = sum(1 for line in res.stdout.splitlines() if "::" in line)
        if res.returncode not in (0, 5):
            raise Failed(f"pytest could not collect the marked tests (exit {res.returncode})",
                         {"output": res.stdout[-3000:] + res.stderr[-2000:]})
        raise Skip(f"no NVIDIA GPU: {selected} marked tests selected, none run")
    report: dict[str, Any] = {}
    extra = [t for t in EXTRA_GPU_TESTS if (TESTS.parent / t.split("::")[0]).exists()]
    for label, args in (("marked", marked), ("extra", extra)):
        if not args:
            continue
        xml = ctx.work / f"pytest-{label}.xml"
        res = _pytest([*args, "-q", "-rs", f"--junitxml={xml}"], ctx.left() - 30)
        report[label] = {**parse_junit(xml.read_text()), "exit": res.returncode} if xml.exists() else {
            "exit": res.returncode, "output": res.stdout[-3000:]}
    failed = [f for part in report.values() for f in part.get("failed", [])]
    if failed or any(part["exit"] not in (0, 5) for part in report.values()):
        raise Failed(f"{len(failed)} GPU test(s) failed", report)
    return report


def _cli(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from export.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=max(timeout, 10))


def trt_build_step(ctx: Context, bundle: Path) -> dict[str, Any]:
    """``pvlm-export trt --fp16`` and ``pvlm-export trt`` into the bundle; on TensorRT 10 also the weakly typed FP16."""
    from export.trt import TrtUnavailable, build_engines, trt_target
    from runtime.bundle import Bundle

    try:
        target = trt_target()
    except TrtUnavailable as e:
        raise Skip(str(e)) from None
    out: dict[str, Any] = {"target": target.to_dict(), "commands": []}
    for args in (["trt", "--fp16", "--force", str(bundle)], ["trt", "--force", str(bundle)]):
        t0 = time.monotonic()
        res = _cli(args, ctx.left() - 60)
        out["commands"].append({"args": args, "exit": res.returncode, "seconds": round(time.monotonic() - t0, 1),
                                "output": (res.stdout + res.stderr)[-1500:]})
        if res.returncode:
            raise Failed(f"pvlm-export {' '.join(args[:-1])} exited {res.returncode}", out)
    out["engines"] = [_engine_summary(e) for e in Bundle.load(bundle).engines if e.format == "tensorrt-plan"]
    if int(target.tensorrt.split(".")[0]) < 11:
        weak = ctx.work / f"{bundle.parent.name}-weak"
        shutil.copytree(bundle, weak, dirs_exist_ok=True)
        try:
            built = build_engines(weak, fp16=True, force=True, progress=False, typing="weak")
            out["weak_fp16"] = {"bundle": str(weak), "engines": [_engine_summary(e) for e in built]}
        except Exception as e:  # noqa: BLE001 - reported; the strongly typed engines stay usable
            out["weak_fp16"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def _engine_summary(e: Any) -> dict[str, Any]:
    keys = ("typing", "fp16", "fp32_layers", "fp32_plan_nodes", "source")
    return {"file": e.file, "precision": e.precision, "bytes": e.bytes, **{k: e.build.get(k) for k in keys}}


def _inputs(bundle: Path, n: int) -> Any:
    from bench.speed import bench_inputs
    from runtime.bundle import Bundle

    pre = Bundle.load(bundle, verify=False).preprocessing
    return bench_inputs((pre.height, pre.width), n, list(pre.mean), list(pre.std), seed=3)


def _agreement(ours: list[list[int]], ref: list[list[int]]) -> dict[str, Any]:
    tokens = sum(len(r) for r in ref)
    same = sum(a == b for x, y in zip(ours, ref) for a, b in zip(x, y))
    return {"identical": sum(x == y for x, y in zip(ours, ref)), "images": len(ref),
            "token_agreement": round(same / max(tokens, 1), 4)}


def _ids(bundle: Path, pixels: Any, new_tokens: int, **options: Any) -> list[list[int]]:
    from runtime import Describer

    with Describer(bundle, **options) as d:
        out: list[list[int]] = []
        for start in range(0, len(pixels), d.max_batch):
            ids, _ = d.generate_ids(pixels[start:start + d.max_batch], new_tokens, stop_at_eos=False)
            out += ids
        return out


def trt_parity_step(ctx: Context, bundle: Path, built: Step | None) -> dict[str, Any]:
    """The tensorrt backend's ids on every engine set against ONNX Runtime CPU in the same precision."""
    if built is None or built.status != "passed":
        raise Skip("no TensorRT engines (trt-build " + (built.status if built else "did not run") + ")")
    pixels = _inputs(bundle, PARITY_IMAGES)
    out: dict[str, Any] = {}
    sets = [("strong-or-auto", bundle)] + ([("weak", Path(built.data["weak_fp16"]["bundle"]))]
                                           if "bundle" in built.data.get("weak_fp16", {}) else [])
    for label, root in sets:
        for precision in ("fp32", "fp16") if label != "weak" else ("fp16",):
            ref = _ids(root, pixels, ctx.new_tokens, backend="onnxruntime-cpu", decoder="portable", precision=precision)
            got = _ids(root, pixels, ctx.new_tokens, backend="tensorrt", precision=precision)
            out[f"{label}/{precision}"] = _agreement(got, ref)
    low = [k for k, v in out.items() if k.endswith("fp32") and v["identical"] < FP32_FLOOR * v["images"]]
    if low:
        raise Failed(f"FP32 engines below {FP32_FLOOR:.0%} identical sequences: {', '.join(low)}", out)
    return out


def ort_cuda_step(ctx: Context, bundle: Path) -> dict[str, Any]:
    """ONNX Runtime CUDA against CPU: the portable decoder and decoder_ort (shared cache buffer), each precision."""
    import onnxruntime

    from runtime.backends.ort_bound import cuda_kernel_notes, supports_bound_cache
    from runtime.bundle import Bundle

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise Skip(f"no CUDAExecutionProvider in onnxruntime {onnxruntime.__version__} (install onnxruntime-gpu "
                   "instead of onnxruntime, on a machine with an NVIDIA GPU)")
    b = Bundle.load(bundle, verify=False)
    pixels = _inputs(bundle, PARITY_IMAGES)
    decoders = ["portable"] + (["ort"] if "decoder_ort" in b.manifest.graphs
                               and supports_bound_cache(onnxruntime.__version__) else [])
    head_dim = b.model_config.head_dim
    out: dict[str, Any] = {"head_dim": head_dim, "cuda_kernel_notes": cuda_kernel_notes(head_dim), "runs": {}}
    for precision in b.precisions:
        if precision == "int8":
            continue
        ref = _ids(bundle, pixels, ctx.new_tokens, backend="onnxruntime-cpu", decoder="portable", precision=precision)
        for decoder in decoders:
            try:
                got = _ids(bundle, pixels, ctx.new_tokens, backend="onnxruntime-cuda", decoder=decoder,
                           precision=precision)
                out["runs"][f"{decoder}/{precision}"] = _agreement(got, ref)
            except Exception as e:  # noqa: BLE001 - one path failing is a finding, not the end of the step
                out["runs"][f"{decoder}/{precision}"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    bad = [k for k, v in out["runs"].items() if "error" in v
           or (k.endswith("fp32") and v["identical"] < FP32_FLOOR * v["images"])]
    out["decoder_ort_on_cuda_matches"] = "ort/fp32" in out["runs"] and "ort/fp32" not in bad
    if bad:
        raise Failed(f"ONNX Runtime CUDA differs from CPU or fails: {', '.join(bad)}", out)
    return out


def rtx_ep_step(ctx: Context, bundle: Path) -> dict[str, Any]:
    """The TensorRT-RTX plugin execution provider on the encoder and one decoder step, against CPU."""
    import numpy as np
    import onnxruntime as ort

    from runtime.bundle import Bundle

    try:
        rtx = importlib.import_module("onnxruntime_ep_nv_tensorrt_rtx")
    except ImportError:
        raise Skip("onnxruntime-ep-nv-tensorrt-rtx is not installed (pip install onnxruntime-ep-nv-tensorrt-rtx-cu13; "
                   "it registers with the plain onnxruntime package, not onnxruntime-gpu)") from None
    if not hasattr(ort, "register_execution_provider_library"):
        raise Skip(f"onnxruntime {ort.__version__} cannot load plugin execution providers (1.23 or newer can)")
    name = rtx.get_ep_name()
    ort.register_execution_provider_library(name, rtx.get_library_path())
    devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
    if not devices:
        raise Skip(f"{name} found no device (the TensorRT RTX EP runs on RTX GPUs, Ampere or later)")
    b = Bundle.load(bundle, verify=False)
    pixels = _inputs(bundle, 4)
    out: dict[str, Any] = {"ep": name, "version": getattr(rtx, "__version__", None)}
    opts = ort.SessionOptions()
    opts.add_provider_for_devices(devices, {})
    enc_rtx = ort.InferenceSession(str(b.path("encoder")), sess_options=opts)
    enc_cpu = ort.InferenceSession(str(b.path("encoder")), providers=["CPUExecutionProvider"])
    got, ref = enc_rtx.run(None, {"pixels": pixels}), enc_cpu.run(None, {"pixels": pixels})
    out["encoder_max_abs_diff"] = float(max(np.abs(g - r).max() for g, r in zip(got, ref)))
    times = []
    for _ in range(6):
        t0 = time.perf_counter()
        enc_rtx.run(None, {"pixels": pixels})
        times.append((time.perf_counter() - t0) * 1e3)
    out["encoder_ms_p50_batch4"] = round(float(np.median(times[1:])), 3)
    if not np.isfinite(out["encoder_max_abs_diff"]) or out["encoder_max_abs_diff"] > 5e-2:
        raise Failed("the TensorRT RTX EP's encoder outputs differ from ONNX Runtime CPU", out)
    return out


def bench_step(ctx: Context, bundle: Path, checkpoint: Path | None, trt_built: bool) -> dict[str, Any]:
    """``pvlm-bench`` of the GPU backends here against a torch baseline, and PyTorch on CUDA timed alike."""
    from bench.cli_speed import BACKEND_NAMES

    env = ctx.env
    has_cuda = "CUDAExecutionProvider" in env["onnxruntime_providers"]
    cuda = ["onnxruntime-cuda", "onnxruntime-cuda-ort"] if has_cuda else []
    gpu_backends = (["tensorrt"] if trt_built else []) + [b for b in cuda if b in BACKEND_NAMES]
    torch_cuda = env["torch_cuda"] and checkpoint is not None
    if not gpu_backends and not torch_cuda:
        raise Skip("no GPU backend here (TensorRT engines, CUDAExecutionProvider or PyTorch on CUDA)")
    out: dict[str, Any] = {}
    baseline = "torch-cuda" if "torch-cuda" in BACKEND_NAMES and torch_cuda else "torch"
    if gpu_backends:
        backends = ([baseline] if checkpoint is not None else []) + gpu_backends
        path = ctx.work / f"bench-{bundle.parent.name}.json"
        args = [str(bundle), "--backend", ",".join(backends), "--precision", "auto", "--batch-size",
                *map(str, ctx.batches), "--new-tokens", str(ctx.new_tokens), "--iters", str(ctx.iters),
                "--json-out", str(path), "--quiet"] + (["--checkpoint", str(checkpoint)] if checkpoint else [])
        res = subprocess.run([sys.executable, "-c", "from bench.cli_speed import main; main()", *args],
                             capture_output=True, text=True, timeout=max(ctx.left() - 20, 10))
        if res.returncode:
            raise Failed(f"pvlm-bench exited {res.returncode}",
                         {"args": args, "output": (res.stdout + res.stderr)[-3000:]})
        report = json.loads(path.read_text())
        out["pvlm_bench"] = {"backends": backends, "results": report["results"],
                             "comparisons": report.get("comparisons")}
    if torch_cuda and baseline != "torch-cuda":
        out["torch_cuda"] = time_torch_cuda(ctx, bundle, checkpoint)
    return out


def time_torch_cuda(ctx: Context, bundle: Path, checkpoint: Path) -> dict[str, Any]:
    """PyTorch with the KV cache on CUDA (bench's TorchRunner), warm-up then timed iterations, per batch size."""
    import numpy as np

    from bench.speed_runners import TorchRunner

    runner = TorchRunner(checkpoint, "torch", None, device="cuda")
    pixels = _inputs(bundle, max(ctx.batches))
    out: dict[str, Any] = {}
    for batch in ctx.batches:
        runner.run(pixels[:batch], ctx.new_tokens, stop_at_eos=False)  # warm-up
        runs = [runner.run(pixels[:batch], ctx.new_tokens, stop_at_eos=False) for _ in range(ctx.iters)]
        out[str(batch)] = {"p50_ms": round(float(np.median([r.total_ms for r in runs])), 3),
                           "encode_ms_p50": round(float(np.median([r.encode_ms for r in runs])), 3),
                           "decode_ms_p50": round(float(np.median([r.decode_ms for r in runs])), 3),
                           "peak_device_mb": round(runner.peak_device_bytes() / 2**20, 1)}
    return out


def run_check(presets: tuple[str, ...], bundles: tuple[Path, ...], budget_s: float, work: Path,
              batches: tuple[int, ...] = (1, 8), new_tokens: int = 24, iters: int = 5) -> dict[str, Any]:
    """Run every step (see the module docstring) and return the report."""
    ctx = Context(budget_s, work, batches, new_tokens, iters)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    ctx.run("environment", lambda: ctx.env.update(environment()) or dict(ctx.env))
    ctx.run("pytest", lambda: pytest_step(ctx), needs_s=90 if ctx.env.get("has_gpu") else 20)
    targets: list[tuple[str, Callable[[], tuple[Path, Path | None]]]] = [
        (str(b), lambda b=b: _given_bundle(b)) for b in bundles]
    targets += [(p, lambda p=p: export_preset(p, work, max(batches), new_tokens)) for p in presets]
    for label, make in targets:
        made: dict[str, Any] = {}

        def bundle_step(make: Callable[[], tuple[Path, Path | None]] = make, made: dict[str, Any] = made) -> dict:
            made["bundle"], made["checkpoint"] = make()
            return {"bundle": str(made["bundle"]), "checkpoint": made["checkpoint"] and str(made["checkpoint"])}

        exporting = label in presets  # an export runs unbounded in this process: start it only with time for it
        if ctx.run(f"{label}: bundle", bundle_step, needs_s=150 if exporting else 5).status != "passed":
            continue
        bundle, checkpoint = made["bundle"], made["checkpoint"]
        ctx.run(f"{label}: ort-cuda", lambda: ort_cuda_step(ctx, bundle), needs_s=20)
        built = ctx.run(f"{label}: trt-build", lambda: trt_build_step(ctx, bundle), needs_s=90)
        ctx.run(f"{label}: trt-parity", lambda: trt_parity_step(ctx, bundle, built), needs_s=20)
        ctx.run(f"{label}: tensorrt-rtx-ep", lambda: rtx_ep_step(ctx, bundle), needs_s=20)
        ctx.run(f"{label}: bench", lambda: bench_step(ctx, bundle, checkpoint, built.status == "passed"), needs_s=60)
    counts = {s: sum(1 for x in ctx.steps if x.status == s) for s in ("passed", "failed", "skipped")}
    return {"format": FORMAT, "version": 1, "started_at": started, "budget_s": budget_s,
            "seconds": round(time.monotonic() - ctx.started, 1), "environment": ctx.env,
            "steps": [asdict(s) for s in ctx.steps],
            "summary": {**counts, "skipped_steps": {s.name: s.reason for s in ctx.steps if s.status == "skipped"},
                        "failed_steps": {s.name: s.reason for s in ctx.steps if s.status == "failed"}}}


def _given_bundle(path: Path) -> tuple[Path, Path | None]:
    from runtime.bundle import Bundle, BundleError

    bundle = Bundle.load(path)
    try:
        return path, bundle.find_source_checkpoint()
    except BundleError:
        return path, None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="gpu_check.json", show_default=True,
              help="Where to write the JSON report.")
@click.option("--preset", "presets", multiple=True,
              help="Export a random-init model of this preset to check (repeatable; default "
                   f"{', '.join(DEFAULT_PRESETS)} unless --bundle is given).")
@click.option("--bundle", "bundles", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Check this exported bundle (repeatable; its source checkpoint, if present, is the torch baseline).")
@click.option("--budget-s", type=click.FloatRange(min=1), default=DEFAULT_BUDGET_S, show_default=True,
              help="Seconds for the whole check; a step that would start past it is skipped.")
@click.option("--batch-size", "batches", multiple=True, type=click.IntRange(min=1), default=(1, 8), show_default=True,
              help="Benchmark batch sizes (repeatable).")
@click.option("--new-tokens", type=click.IntRange(min=1), default=24, show_default=True, help="Tokens per description.")
@click.option("--iters", type=click.IntRange(min=1), default=5, show_default=True, help="Timed benchmark iterations.")
@click.option("--work", type=click.Path(file_okay=False), help="Keep exported bundles and engines here (default: a "
              "temporary folder, removed afterwards).")
def main(out_path: str, presets: tuple[str, ...], bundles: tuple[str, ...], budget_s: float, batches: tuple[int, ...],
         new_tokens: int, iters: int, work: str | None) -> None:
    """Run the GPU checks (tests, TensorRT builds, CUDA and TensorRT parity, benchmarks) and write one JSON report."""
    presets = presets or (() if bundles else DEFAULT_PRESETS)
    tmp = None if work else tempfile.mkdtemp(prefix="pvlm-gpu-check-")
    root = Path(work or tmp)
    root.mkdir(parents=True, exist_ok=True)
    try:
        click.echo(f"gpu check: {', '.join([*presets, *bundles])} within {budget_s:.0f} s", err=True)
        report = run_check(tuple(presets), tuple(Path(b) for b in bundles), budget_s, root, tuple(batches),
                           new_tokens, iters)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    write_json(out_path, report)
    s = report["summary"]
    click.echo(f"{s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped ({report['seconds']:.0f} s); "
               f"report: {out_path}")
    sys.exit(1 if s["failed"] else 0)


if __name__ == "__main__":
    main()
