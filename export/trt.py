"""TensorRT engines for a bundle's graphs (``pvlm-export trt [--fp16] BUNDLE``).

Polygraphy's loaders over the TensorRT 10 Python API, in one of two typings:

- ``strong`` (TensorRT 11 has no other; 10 supports it): the network is parsed with
  ``strongly_typed=True`` from the graph the export verified in that precision, ``*.fp16.onnx``
  for FP16 (its FP32 islands are the precision plan's, already cast in the graph), and TensorRT
  keeps every tensor's type. No FP16 flag, no per-layer precision.
- ``weak`` (TensorRT 10 only): the FP32 graph, the FP16 builder flag, and the precision plan's
  layers (``export/precision_plan.py``, the same plan the ONNX FP16 converter uses) pinned to
  FP32 under ``precision_constraints="obey"``. The ONNX parser turns one node into several
  layers (a Gemm into a matrix multiply and a bias add, ArgMax into TopK and a cast), so every
  layer of a planned node is pinned, found by the node name the parser records in each layer's
  metadata and by walking back from the node's output tensors to the tensors ONNX names; only
  layers with float outputs are pinned (integer layers such as Range keep their types).

``auto`` (the default) builds FP16 engines strongly typed when the bundle has its verified FP16
graphs, weakly typed otherwise on TensorRT 10; FP32 engines weakly typed on 10, strongly on 11.
Then one optimisation profile per graph derived from the manifest's limits, a timing cache
shared by the builds, each engine written atomically and recorded in the manifest's ``engines``
list (``runtime/engines.py``) with the TensorRT version, GPU and compute capability it is tied to.

Engines are built from the portable graphs (``encoder``, ``decoder``): ``decoder_ort``'s
com.microsoft kernels exist only in ONNX Runtime. Not yet run on a GPU; ``python -m
bench.gpu_check`` runs the builds, the GPU tests and the benchmark in one command (see
``docs/hardware.md``).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.backends.tensorrt import gpu_compute_capability
from runtime.bundle import Bundle, sha256_path
from runtime.engines import Engine

from .manifest import artifact_entry, record_engines
from .precision_plan import Fp32Node, fp32_nodes

log = logging.getLogger(__name__)

ENGINE_GRAPHS = ("encoder", "decoder")
OPT_BATCH = 8  # the common batch the tactics are tuned for (clipped to the bundle's max batch)
TIMING_CACHE = "trt_timing.cache"
TYPINGS = ("auto", "strong", "weak")
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")  # how the ONNX parser records a layer's node in its metadata
INSTALL_HINT = ("pip install 'tensorrt>=10,<11' polygraphy cuda-python (the trt extra; where PyPI's tensorrt wheels "
                "fetch their libraries from NVIDIA's index, https://pypi.nvidia.com must be reachable) on a machine "
                "with an NVIDIA GPU and driver")


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
    return gpu_compute_capability()


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


def onnx_tensor_names(model: Any) -> set[str]:
    """Every tensor name of an ``onnx.ModelProto`` graph: inputs, initializers, node inputs and outputs."""
    g = model.graph
    return ({i.name for i in g.input} | {t.name for t in g.initializer}
            | {t for n in g.node for t in (*n.input, *n.output) if t})


def layer_nodes(layer: Any) -> list[str]:
    """The ONNX node names the parser recorded in a layer's metadata (TensorRT 10+; [] without)."""
    return _ONNX_LAYER.findall(getattr(layer, "metadata", "") or "")


def plan_layers(network: Any, plan: Iterable[Fp32Node], onnx_tensors: set[str]) -> dict[str, list[int]]:
    """Plan node name -> indices of the network layers the ONNX parser made from it.

    A layer belongs to a node when its metadata names the node, its name is the node's name,
    or it lies between the node's output tensors and the tensors ONNX names (``onnx_tensors``),
    walking producers back from the outputs: the parser names only a node's final tensors.
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for j in range(layer.num_outputs):
            t = layer.get_output(j)
            if t is not None:
                producer[t.name] = i
    owner: dict[int, list[str]] = {i: layer_nodes(layer) for i, layer in enumerate(layers)}
    out: dict[str, list[int]] = {}
    for node in plan:
        found = {i for i, names in owner.items() if node.name in names or layers[i].name == node.name}
        stack, seen = [producer[t] for t in node.outputs if t in producer], set()
        while stack:
            i = stack.pop()
            if i in seen or (owner[i] and node.name not in owner[i]):  # visited, or another node's layer
                continue
            seen.add(i)
            found.add(i)
            layer = layers[i]
            for j in range(layer.num_inputs):
                t = layer.get_input(j)
                # stop at ONNX-named tensors: the node's inputs and weights, produced by other nodes
                if t is not None and t.name not in onnx_tensors and t.name in producer:
                    stack.append(producer[t.name])
        out[node.name] = sorted(found)
    return out


def _is_float_layer(layer: Any, trt: Any) -> bool:
    """Computes floats: not a constant or shape layer, and at least one output is float."""
    kinds = {getattr(trt.LayerType, k, None) for k in ("CONSTANT", "SHAPE")} - {None}
    if getattr(layer, "type", None) in kinds:
        return False
    floats = {getattr(trt, k, None) for k in ("float32", "float16", "bfloat16")} - {None}
    outs = [layer.get_output(j) for j in range(layer.num_outputs)]
    return any(t is not None and t.dtype in floats for t in outs)


def mark_fp32_layers(network: Any, plan: Iterable[Fp32Node], trt: Any, onnx_tensors: set[str]) -> int:
    """Pin every float layer of the plan's nodes (see :func:`plan_layers`) to FP32; returns how many.

    Integer layers of a planned node (Range, the int64 cast after ArgMax's TopK) keep their
    types: an FP32 precision on them would make the build fail under obeyed constraints.
    """
    plan = list(plan)
    by_node = plan_layers(network, plan, onnx_tensors)
    unmatched = [name for name, idx in by_node.items() if not idx]
    if unmatched:
        log.debug("precision plan nodes without a TensorRT layer (folded or constant): %s", ", ".join(unmatched))
    floats = {getattr(trt, k, None) for k in ("float32", "float16", "bfloat16")} - {None}
    marked = 0
    for i in sorted({i for idx in by_node.values() for i in idx}):
        layer = network.get_layer(i)
        if not _is_float_layer(layer, trt):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            t = layer.get_output(j)
            if t is not None and t.dtype in floats:
                layer.set_output_type(j, trt.float32)
        marked += 1
    return marked


def fp32_layer_count(network: Any, trt: Any) -> int:
    """Layers computing in FP32 in a strongly typed network: float layers whose float outputs are all FP32."""
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not _is_float_layer(layer, trt):
            continue
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if all(t is None or t.dtype != trt.float16 for t in outs):
            count += 1
    return count


def choose_typing(typing: str, tensorrt_version: str, precision: str, bundle: Bundle) -> str:
    """``strong`` or ``weak`` for a ``typing`` choice of :data:`TYPINGS` (see the module docstring).

    Raises ValueError for a combination that cannot be built: weak typing on TensorRT 11+, or
    strongly typed FP16 without the bundle's verified FP16 graphs.
    """
    if typing not in TYPINGS:
        raise ValueError(f"typing must be one of {', '.join(TYPINGS)}, got {typing!r}")
    m = re.match(r"\d+", tensorrt_version)
    major = int(m.group()) if m else 10
    has_fp16 = "fp16" in bundle.precisions
    if typing == "weak" and major >= 11:
        raise ValueError(f"TensorRT {tensorrt_version} has no weakly typed networks; build with typing strong")
    if typing == "auto":
        typing = "strong" if major >= 11 or (precision == "fp16" and has_fp16) else "weak"
    if typing == "strong" and precision == "fp16" and not has_fp16:
        raise ValueError(f"{bundle.root}: strongly typed FP16 engines are built from the verified FP16 graphs, "
                         "which this bundle lacks; re-export it with pvlm-export onnx --fp16"
                         + ("" if major >= 11 else " (or build weakly typed on TensorRT 10)"))
    return typing


def build_engines(bundle_dir: str | Path, *, fp16: bool = True, opt_batch: int = OPT_BATCH,
                  workspace_gib: float | None = None, force: bool = False, progress: bool = True,
                  typing: str = "auto") -> list[Engine]:
    """Build one engine per graph of ``ENGINE_GRAPHS`` into the bundle and record them in its manifest.

    ``typing``: one of :data:`TYPINGS` (see the module docstring). Raises :class:`TrtUnavailable`
    (before writing anything) without TensorRT or a GPU, ValueError for a typing that cannot be built.
    """
    bundle = Bundle.load(bundle_dir)
    target = trt_target()  # fails here, before anything is written
    precision = "fp16" if fp16 else "fp32"
    typing = choose_typing(typing, target.tensorrt, precision, bundle)
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
                                    fp16_layers=graph not in fp32_graphs, typing=typing))
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
               workspace_gib: float | None, fp16_layers: bool = True, typing: str = "weak") -> Engine:
    import onnx
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessNetwork, Profile

    strong = typing == "strong"
    # strongly typed: the verified graph of this precision (the FP32 file where the variant keeps a graph FP32)
    onnx_path = bundle.path(graph, precision) if strong else bundle.path(graph)
    shapes = profile_shapes(bundle, graph, opt_batch)
    profile = Profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.add(name, lo, opt, hi)
    fp32_layers: list[int] = []
    plan: list[Fp32Node] = []
    fp16 = precision == "fp16" and fp16_layers and not strong
    if strong:
        network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)

        def count(network: Any) -> None:  # Polygraphy passes the parsed network by this keyword
            fp32_layers.append(fp32_layer_count(network, trt))

        network = PostprocessNetwork(network, count, name="count FP32 layers")
    else:
        network = NetworkFromOnnxPath(str(onnx_path))
    if fp16:
        model = onnx.load(str(onnx_path), load_external_data=False)
        plan = fp32_nodes(model)
        tensors = onnx_tensor_names(model)

        def pin(network: Any) -> None:  # Polygraphy passes the parsed network by this keyword
            fp32_layers.append(mark_fp32_layers(network, plan, trt, tensors))

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
        f.flush()
        os.fsync(f.fileno())  # on disk before build_engines renames it into place, as runtime.atomic does
    build = {"typing": typing, "fp16": fp16 or (strong and onnx_path != bundle.path(graph)), "tf32": False,
             "precision_constraints": "obey" if fp16 else None,
             "profiles": [{k: [list(s) for s in v] for k, v in shapes.items()}], "opt_batch": opt_batch,
             "fp32_plan_nodes": len(plan), "fp32_by_fp16_verification": precision == "fp16" and not fp16_layers,
             "fp32_layers": fp32_layers[0] if fp32_layers else 0, "timing_cache": TIMING_CACHE,
             "source": onnx_path.name,
             "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    io = bundle.graph(graph).io()
    return Engine("tensorrt-plan", graph, file, precision, sha256_path(tmp), tmp.stat().st_size,
                  target.to_dict(), build, io)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")
