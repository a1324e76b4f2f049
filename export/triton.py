"""Triton Inference Server model repository from an export bundle (``pvlm-export triton``).

Three models, laid out like the public k2-fsa/sherpa Whisper-on-Triton repository::

    REPO/pvlm_encoder/   pixels (B,3,H,W) -> cross_k, cross_v        (ONNX Runtime or TensorRT plan)
    REPO/pvlm_decoder/   ONE step; the KV cache is explicit inputs/outputs
    REPO/pvlm_describer/ Python backend, dynamic batching: IMAGE bytes -> TEXT, ATTRIBUTES (JSON), ALTERNATIVES

The describer is a ``runtime.Describer`` around
:class:`runtime.backends.triton_bls.TritonBlsBackend`, whose encode/step calls are BLS requests
to the two graph models, so preprocessing and the loop are the runtime's own. The runtime package source is copied
into the describer's version directory: the repository needs nothing from this toolkit installed.

The graph models keep ``max_batch_size: 0`` because the cache tensors carry the batch on axis 1
(``(L, B, heads, T, head_dim)``); the describer is the only batched model, which is where the
dynamic batcher belongs anyway (one request = one image, all steps of a batch run together).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pvlm.outdir import building, check_replaceable, is_triton_repo
from runtime.bundle import TensorEntry
from runtime.engines import select
from runtime.preprocess import MAX_IMAGE_BYTES  # per encoded image; larger requests get a clear error

log = logging.getLogger(__name__)

ENCODER, DECODER, DESCRIBER = "pvlm_encoder", "pvlm_decoder", "pvlm_describer"
KINDS = ("cpu", "gpu")
FLAVORS = ("native", "python")
WHAT = "a Triton repository written by pvlm-export triton"

_TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}
_TEMPLATES = Path(__file__).resolve().parent / "triton_templates"


def triton_dtype(dtype: str) -> str:
    """Numpy dtype name (as in the manifest) -> Triton ``TYPE_*`` name."""
    try:
        return _TRITON_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r} has no Triton equivalent") from None


def triton_dims(shape: list[Any]) -> list[int]:
    """Manifest shape (ints and dimension names) -> Triton dims, ``-1`` for every named (dynamic) axis."""
    return [d if isinstance(d, int) else -1 for d in shape]


def write_triton_repo(bundle_dir: str | Path, out_dir: str | Path, max_batch: int = 8, queue_delay_ms: float = 50,
                      instances: int = 1, kind: str = "cpu", flavor: str = "native", *, force: bool = False,
                      max_image_bytes: int = MAX_IMAGE_BYTES) -> Path:
    """Write a Triton model repository for the bundle at ``bundle_dir``; returns ``out_dir``.

    ``max_batch``: the describer's ``max_batch_size`` (at most the bundle's limit);
    ``queue_delay_ms``: the dynamic batcher's ``max_queue_delay_microseconds`` / 1000;
    ``instances``: instances per model; ``kind``: ``cpu`` or ``gpu`` instance groups;
    ``flavor``: ``native`` (ONNX Runtime backend, or TensorRT plans when the manifest lists
    engines and ``kind="gpu"``) or ``python`` (Python-backend models running ONNX Runtime).
    Atomic: written to a temporary directory beside ``out_dir`` and renamed.
    """
    from runtime.bundle import Bundle

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}, got {flavor!r}")
    if instances < 1:
        raise ValueError(f"instances must be >= 1, got {instances}")
    if queue_delay_ms < 0:
        raise ValueError(f"queue_delay_ms must be >= 0, got {queue_delay_ms}")
    if max_image_bytes < 1:
        raise ValueError(f"max_image_bytes must be >= 1, got {max_image_bytes}")
    bundle = Bundle.load(bundle_dir, verify=True)  # BundleError (a ValueError) names what is wrong
    limit = bundle.limits.max_batch
    if not 1 <= max_batch <= limit:
        raise ValueError(f"max_batch must be in [1, {limit}] (the bundle's limit), got {max_batch}")
    out = Path(out_dir)
    check_replaceable(out, force, is_triton_repo, WHAT)
    with building(out, force=force, is_ours=is_triton_repo, what=WHAT) as tmp:
        engines = _plans(bundle) if flavor == "native" and kind == "gpu" else {}
        for model, graph in ((ENCODER, "encoder"), (DECODER, "decoder")):
            _write_graph_model(tmp / model, bundle, model, graph, flavor, kind, instances, engines.get(graph))
        _write_describer(tmp / DESCRIBER, bundle, max_batch, queue_delay_ms, instances, max_image_bytes)
    log.info("wrote Triton repository %s (%s flavor, %s, max batch %d)", out, flavor, kind, max_batch)
    return out


def _plans(bundle: Any) -> dict[str, Path]:
    """Graph name -> TensorRT plan path, from the manifest's ``engines`` (``runtime/engines.py``, written by
    ``pvlm-export trt``): the FP16 plans when the bundle has both graphs' (FP32 I/O either way), else FP32."""
    graphs = ("encoder", "decoder")
    for precision in ("fp16", "fp32"):
        found = select(bundle.engines, "tensorrt-plan", precision, graphs)
        if len(found) == len(graphs):
            return {graph: bundle.root / e.file for graph, e in found.items()}
        if found:  # one plan and one ONNX graph would mix backends for no gain
            log.warning("the manifest lists a %s TensorRT engine for only one graph; not using it", precision)
    return {}


def _write_graph_model(model_dir: Path, bundle: Any, name: str, graph: str, flavor: str, kind: str,
                       instances: int, plan: Path | None) -> None:
    spec = bundle.graph(graph)
    version = model_dir / "1"
    version.mkdir(parents=True)
    if flavor == "python":
        shutil.copy2(_TEMPLATES / "graph_model.py", version / "model.py")
        shutil.copy2(bundle.path(graph), version / spec.file)
        head = ['backend: "python"']
        params = {"onnx_file": spec.file}
    elif plan is not None:
        shutil.copy2(plan, version / "model.plan")
        head = ['platform: "tensorrt_plan"']
        params = {}
    else:
        shutil.copy2(bundle.path(graph), version / "model.onnx")
        head = ['platform: "onnxruntime_onnx"']
        params = {}
    text = _config(name, head, 0, _tensors(spec.inputs), _tensors(spec.outputs),
                   instances, "KIND_GPU" if kind == "gpu" else "KIND_CPU", params)
    (model_dir / "config.pbtxt").write_text(text)


# The runtime's applications (their own stacks, and the native build tree): the Triton describer needs only
# the base and its backends.
RUNTIME_APPLICATIONS = ("native", "search", "serving", "video")


def _write_describer(model_dir: Path, bundle: Any, max_batch: int, queue_delay_ms: float, instances: int,
                     max_image_bytes: int) -> None:
    import runtime

    version = model_dir / "1"
    version.mkdir(parents=True)
    shutil.copy2(_TEMPLATES / "describer_model.py", version / "model.py")
    shutil.copy2(bundle.root / "manifest.json", version / "manifest.json")
    _copy_tree(Path(runtime.__file__).resolve().parent, version / "runtime",
               ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *RUNTIME_APPLICATIONS))
    inputs = [
        # encoded JPEG/PNG bytes; ragged so that requests of different lengths batch together
        {"name": "IMAGE", "data_type": "TYPE_UINT8", "dims": [-1], "optional": True, "allow_ragged_batch": True},
        {"name": "RAW", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3], "optional": True, "allow_ragged_batch": True},
    ]
    # ALTERNATIVES: every returned sequence, best first, as JSON (several with the request parameter n_best)
    outputs = [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]},
               {"name": "ATTRIBUTES", "data_type": "TYPE_STRING", "dims": [1]},
               {"name": "ALTERNATIVES", "data_type": "TYPE_STRING", "dims": [1]}]
    params = {"encoder_model": ENCODER, "decoder_model": DECODER, "max_image_bytes": str(max_image_bytes),
              "max_new_tokens": str(bundle.limits.max_new_tokens)}
    batching = f"dynamic_batching {{\n  max_queue_delay_microseconds: {int(round(queue_delay_ms * 1000))}\n}}"
    text = _config(DESCRIBER, ['backend: "python"'], max_batch, inputs, outputs, instances, "KIND_CPU", params,
                   extra=batching)
    (model_dir / "config.pbtxt").write_text(text)


def _copy_tree(src: Path, dst: Path, **options: Any) -> None:
    """``shutil.copytree`` that fails with the first file's OSError (a full disk: ENOSPC), not the
    ``shutil.Error`` listing every file it then tried, whose message names no cause a reader can act on."""
    failures: list[OSError] = []

    def copy(s: str, d: str) -> Any:
        try:
            return shutil.copy2(s, d)
        except OSError as e:
            failures.append(e)
            raise

    try:
        shutil.copytree(src, dst, copy_function=copy, **options)
    except shutil.Error:
        if failures:
            raise failures[0] from None
        raise


def _tensors(entries: Mapping[str, TensorEntry]) -> list[dict[str, Any]]:
    return [{"name": n, "data_type": triton_dtype(t.dtype), "dims": triton_dims(list(t.shape))}
            for n, t in entries.items()]


def _config(name: str, head: list[str], max_batch: int, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
            instances: int, kind: str, params: dict[str, str], extra: str = "") -> str:
    """``config.pbtxt`` text (protobuf text format of Triton's ModelConfig)."""

    def tensor(t: dict[str, Any]) -> str:
        lines = [f'    name: "{t["name"]}"', f"    data_type: {t['data_type']}",
                 f"    dims: [ {', '.join(str(d) for d in t['dims'])} ]"]
        lines += [f"    {key}: true" for key in ("optional", "allow_ragged_batch") if t.get(key)]
        return "  {\n" + "\n".join(lines) + "\n  }"

    parts = [f'name: "{name}"', *head, f"max_batch_size: {max_batch}",
             "input [\n" + ",\n".join(tensor(t) for t in inputs) + "\n]",
             "output [\n" + ",\n".join(tensor(t) for t in outputs) + "\n]",
             f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]"]
    if extra:
        parts.append(extra)
    parts += [f'parameters {{\n  key: "{k}"\n  value: {{ string_value: {json.dumps(v)} }}\n}}'
              for k, v in params.items()]
    return "\n".join(parts) + "\n"


__all__ = ["DECODER", "DESCRIBER", "ENCODER", "MAX_IMAGE_BYTES", "triton_dims", "triton_dtype", "write_triton_repo"]
