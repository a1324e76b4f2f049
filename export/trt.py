"""TensorRT engines for a bundle's graphs (``pvlm-export trt [--fp16] BUNDLE``).

Polygraphy's loaders over the TensorRT 10 Python API: network from the ONNX file, the
precision plan's FP32 layers marked (``export/precision_plan.py``, the same plan the ONNX
FP16 converter uses) under ``precision_constraints="obey"``, config with FP16 and one
optimisation profile per graph derived from the manifest's limits, a timing cache shared by
the builds, each engine written atomically and recorded in the manifest's ``engines`` list
(``runtime/engines.py``) with the TensorRT version, GPU and compute capability it is tied to.

Engines are built from the portable FP32 graphs (``encoder.onnx``, ``decoder.onnx``): TensorRT
picks FP16 kernels itself, and ``decoder_ort``'s com.microsoft kernels exist only in ONNX Runtime.
Untested on a GPU so far: no machine this was written on had TensorRT (see the README).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.bundle import Bundle, sha256_path
from runtime.engines import Engine

from .manifest import artifact_entry, record_engines
from .precision_plan import fp32_nodes, fp32_outputs

log = logging.getLogger(__name__)

ENGINE_GRAPHS = ("encoder", "decoder")
OPT_BATCH = 8  # the common batch the tactics are tuned for (clipped to the bundle's max batch)
TIMING_CACHE = "trt_timing.cache"
INSTALL_HINT = ("pip install tensorrt (from NVIDIA's package index, https://pypi.nvidia.com; PyPI's wheel is a stub "
                "that downloads from there) on a machine with an NVIDIA GPU and driver")


class TrtUnavailable(RuntimeError):
    """TensorRT or an NVIDIA GPU is missing; the message says which and how to get it."""


@dataclass(frozen=True)
class GpuTarget:
    """What an engine is tied to: TensorRT version, GPU name, compute capability ("9.0")."""

    tensorrt: str
    gpu: str
    compute_capability: str

    def to_dict(self) -> dict[str, str]:
        """Manifest form (an engine's ``target``)."""
        return {"tensorrt": self.tensorrt, "gpu": self.gpu, "compute_capability": self.compute_capability}


def gpu_properties() -> tuple[str, str] | None:
    """(name, "major.minor") of CUDA device 0 through cuda-python, or None when there is no usable GPU."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            return None
    try:
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count < 1:
            return None
        err, prop = cudart.cudaGetDeviceProperties(0)
        if int(err) != 0:
            return None
    except Exception:  # noqa: BLE001 - no driver / no libcudart: no GPU for our purposes
        return None
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return name, f"{prop.major}.{prop.minor}"


def trt_target() -> GpuTarget:
    """The TensorRT version and GPU here; :class:`TrtUnavailable` naming what is missing otherwise."""
    try:
        import tensorrt as trt

        version = trt.__version__
    except ImportError:
        version = None
    gpu = gpu_properties()
    missing = [what for what, absent in (("TensorRT", version is None), ("NVIDIA GPU", gpu is None)) if absent]
    if missing:
        hint = INSTALL_HINT if version is None else "run it on a machine with an NVIDIA GPU and driver"
        raise TrtUnavailable(f"cannot build TensorRT engines here: no {' and no '.join(missing)}; {hint}")
    assert gpu is not None and version is not None
    return GpuTarget(version, *gpu)


def profile_shapes(bundle: Bundle, graph: str, opt_batch: int = OPT_BATCH) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Input name -> (min, opt, max) shapes from the manifest's symbolic shapes and limits.

    ``batch``: 1 .. max_batch, opt at ``opt_batch``; ``cache`` (the decoder's cache capacity, which
    the runtime sets to the tokens it will generate): 1 .. max_new_tokens, opt at max_new_tokens.
    """
    limits = bundle.limits
    max_batch, cache = limits.max_batch, limits.max_new_tokens
    dims = {"batch": (1, min(opt_batch, max_batch), max_batch), "cache": (1, cache, cache)}
    out = {}
    for name, spec in bundle.graph(graph).inputs.items():
        unknown = [d for d in spec.shape if isinstance(d, str) and d not in dims]
        if unknown:
            raise ValueError(f"{graph}.{name}: no profile for dimension(s) {', '.join(unknown)}")
        out[name] = tuple(tuple(dims[d][k] if isinstance(d, str) else int(d) for d in spec.shape) for k in range(3))
    return out


def mark_fp32_layers(network: Any, outputs: set[str], trt: Any) -> int:
    """Pin every layer producing one of ``outputs`` (the precision plan's tensors) to FP32; returns how many.

    The ONNX parser gives a node's final layer the node's output tensor names, so the
    plan is matched on tensors, not on layer names (which the parser decorates).
    """
    marked = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not any(t is not None and t.name in outputs for t in outs):
            continue
        layer.precision = trt.float32
        for j, t in enumerate(outs):
            if t is not None and t.dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)
        marked += 1
    return marked


def build_engines(bundle_dir: str | Path, *, fp16: bool = True, opt_batch: int = OPT_BATCH,
                  workspace_gib: float | None = None, force: bool = False, progress: bool = True) -> list[Engine]:
    """Build one engine per graph of ``ENGINE_GRAPHS`` into the bundle and record them in its manifest.

    Raises :class:`TrtUnavailable` (before writing anything) without TensorRT or a GPU.
    """
    bundle = Bundle.load(bundle_dir)
    target = trt_target()  # fails here, before anything is written
    precision = "fp16" if fp16 else "fp32"
    existing = [e for e in bundle.engines if e.format == "tensorrt-plan" and e.precision == precision]
    if existing and not force:
        raise FileExistsError(f"{bundle.root}: already has {precision} TensorRT engines "
                              f"({', '.join(e.file for e in existing)}); use --force to rebuild")
    from tqdm import tqdm

    fp32_graphs = measured_fp32_graphs(bundle) if precision == "fp16" else set()
    built: list[Engine] = []
    try:  # engines land under temporary names; renamed only once every build succeeded
        for graph in tqdm(ENGINE_GRAPHS, desc="tensorrt", unit="engine", disable=not progress):
            built.append(_build_one(bundle, graph, precision, target, opt_batch, workspace_gib,
                                    fp16_layers=graph not in fp32_graphs))
    except BaseException:
        for e in built:
            _tmp(bundle.root / e.file).unlink(missing_ok=True)
        raise
    for e in built:
        os.replace(_tmp(bundle.root / e.file), bundle.root / e.file)
    cache = {TIMING_CACHE: artifact_entry(bundle.root, TIMING_CACHE)} if (bundle.root / TIMING_CACHE).exists() else {}
    record_engines(bundle, built, lambda e: e.format == "tensorrt-plan" and e.precision == precision, cache)
    return built


def measured_fp32_graphs(bundle: Bundle) -> set[str]:
    """Engine graphs the bundle's verified FP16 variant keeps in FP32 (none without an FP16 variant).

    The export's FP16 verification on ONNX Runtime decides per graph (``export/variants.py``
    ``FALLBACKS``): a graph it kept FP32 moved greedy choices in FP16, so its engine is built
    without FP16 layers too.
    """
    if "fp16" not in bundle.precisions:
        return set()
    return {g for g in ENGINE_GRAPHS if g not in bundle.variant_graphs("fp16")}


def _build_one(bundle: Bundle, graph: str, precision: str, target: GpuTarget, opt_batch: int,
               workspace_gib: float | None, fp16_layers: bool = True) -> Engine:
    import onnx
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessNetwork, Profile

    onnx_path = bundle.path(graph)
    shapes = profile_shapes(bundle, graph, opt_batch)
    profile = Profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.add(name, lo, opt, hi)
    network = NetworkFromOnnxPath(str(onnx_path))
    fp32_layers: list[int] = []
    plan = fp32_nodes(onnx.load(str(onnx_path), load_external_data=False))
    fp16 = precision == "fp16" and fp16_layers
    if fp16:
        outputs = fp32_outputs(plan)

        def pin(network: Any) -> None:  # Polygraphy passes the parsed network by this keyword
            fp32_layers.append(mark_fp32_layers(network, outputs, trt))

        network = PostprocessNetwork(network, pin, name="precision plan")
    cache = bundle.root / TIMING_CACHE
    pools = {trt.MemoryPoolType.WORKSPACE: int(workspace_gib * (1 << 30))} if workspace_gib else None
    config = CreateConfig(fp16=fp16, profiles=[profile], memory_pool_limits=pools,
                          precision_constraints="obey" if fp16 else None,
                          load_timing_cache=str(cache) if cache.exists() else None)
    data = EngineBytesFromNetwork(network, config, save_timing_cache=str(cache))()
    file = f"{graph}.{precision}.plan"
    tmp = _tmp(bundle.root / file)
    with open(tmp, "wb") as f:
        f.write(bytes(data))
    build = {"fp16": fp16, "tf32": False, "precision_constraints": "obey" if fp16 else None,
             "profiles": [{k: [list(s) for s in v] for k, v in shapes.items()}], "opt_batch": opt_batch,
             "fp32_plan_nodes": len(plan) if fp16 else 0, "fp32_by_fp16_verification": precision == "fp16" and not fp16_layers,
             "fp32_layers": fp32_layers[0] if fp32_layers else 0, "timing_cache": TIMING_CACHE,
             "source": bundle.graph(graph).file,
             "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    io = bundle.graph(graph).io()
    return Engine("tensorrt-plan", graph, file, precision, sha256_path(tmp), tmp.stat().st_size,
                  target.to_dict(), build, io)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")
