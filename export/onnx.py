"""Export a checkpoint to a verified ONNX bundle: ``manifest.json``, ``encoder.onnx``, ``decoder.onnx``,
and for ONNX Runtime ``cross_ort.onnx`` + ``decoder_ort.onnx``."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from pvlm.checkpoint import load_checkpoint
from pvlm.model import PersonVLM
from pvlm.outdir import building, check_replaceable
from pvlm.vocab import SPECIALS, Vocabulary
from runtime.backends.ort_bound import supports_bound_cache
from runtime.bundle import Limits, Manifest, is_bundle
from runtime.verification import Verification

from .calibration import calibrate_heads, held_out_records
from .graphs import DecoderStepGraph, EncoderGraph
from .manifest import artifact_entry, producer_versions, write_manifest
from .model_card import write_bundle_docs
from .ort_decoder import export_ort_decoder
from .spec import GraphSpec, attribute_heads_layout, check_cross_choice, graph_specs
from .validate import ParityReport, ValidationError, check_graph, check_parity
from .variants import VariantOptions, add_variants

log = logging.getLogger(__name__)

MIN_OPSET = 18  # the torch.export-based exporter's floor; LayerNormalization is one op from 17
WHAT = "an export bundle"
DEFAULT_OPSET = 20  # Gelu is one op from 20 (fewer nodes per decoder step)
CHECKS = "onnx.checker(full_check) + strict shape inference + spec"


def export_onnx(
    checkpoint: str | Path, out_dir: str | Path | None = None, *, opset: int = DEFAULT_OPSET, max_batch: int = 64,
    max_new_tokens: int = 48, force: bool = False, vocab: str | Path | None = None, verify: bool = True,
    atol: float = 1e-4, precisions: tuple[str, ...] = (), variant_options: VariantOptions | None = None,
    accept_mismatch: bool = False, cross_attention: str = "auto", calibration_data: str | Path | None = None,
) -> Path:
    """Export, validate and write a bundle atomically; returns the bundle directory.

    ``vocab`` is only needed for checkpoints of the original repository. ``precisions``
    (``fp16``, ``int8``) adds verified variants of the graphs (see ``export/variants.py``).
    ``cross_attention``: ``decoder_ort``'s cross-attention form (``auto``, ``tables``, ``attention``;
    see ``export.spec.cross_form``). ``calibration_data``: a JSONL of labelled crops to calibrate the attribute
    heads on (default: the checkpoint's validation split; checkpoints without heads ignore it).
    A failed validation raises :class:`ValidationError` and leaves nothing behind.
    """
    checkpoint = Path(checkpoint)
    out = Path(out_dir) if out_dir is not None else checkpoint.with_suffix("")
    if opset < MIN_OPSET:
        raise ValueError(f"--opset must be >= {MIN_OPSET}, got {opset}")
    if max_batch < 1:
        raise ValueError(f"--max-batch must be >= 1, got {max_batch}")
    check_cross_choice(cross_attention)
    check_replaceable(out, force, is_bundle, WHAT)  # before any work; checked again at the swap
    model, voc, meta = load_checkpoint(checkpoint, vocab=vocab)
    if not 1 <= max_new_tokens <= model.cfg.max_len:
        raise ValueError(f"--max-new-tokens must be in [1, {model.cfg.max_len}], got {max_new_tokens}")
    held_out = held_out_records(meta, calibration_data) if model.attribute_heads is not None else None
    with building(out, force=force, is_ours=is_bundle, what=WHAT) as tmp:
        manifest = build_bundle(model, voc, tmp, opset=opset, max_batch=max_batch, max_new_tokens=max_new_tokens,
                                verify=verify, atol=atol, cross_attention=cross_attention, held_out=held_out)
        manifest = manifest.with_source(checkpoint_from_bundle(checkpoint, out), _plain(meta),
                                        absolute=str(checkpoint.resolve()))
        manifest = write_bundle_docs(tmp, manifest)  # README.md model card + description.schema.json, listed as artifacts
        write_manifest(tmp, manifest)
        if precisions:
            add_variants(model, tmp, manifest, tuple(precisions), variant_options, accept_mismatch)
    return out


def checkpoint_from_bundle(checkpoint: Path, bundle_dir: Path) -> str:
    """``checkpoint`` as a POSIX path relative to ``bundle_dir``: the bundle finds it from any working directory,
    and both can move together."""
    return Path(os.path.relpath(checkpoint.resolve(), bundle_dir.resolve())).as_posix()


def build_bundle(
    model: PersonVLM, vocab: Vocabulary, out: Path, *, opset: int = DEFAULT_OPSET, max_batch: int = 64,
    max_new_tokens: int = 48, verify: bool = True, atol: float = 1e-4, cross_attention: str = "auto",
    held_out: tuple[list[Any], str] | None = None,
) -> Manifest:
    """Export the graphs into ``out`` and validate them; returns the manifest (not yet written).

    A model with attribute heads gets their layout in ``graphs.encoder.attribute_heads``, with temperatures
    fitted on ``held_out`` (records and where they came from; None or no records: temperatures 1.0).
    """
    try:
        from onnxruntime import __version__ as ort_version
    except ImportError:  # only verify=False gets this far without it; the graph is written unchecked like the rest
        ort_version = None
    model = model.eval()
    cfg = model.cfg
    specs = graph_specs(cfg, cross_attention)
    if ort_version and not supports_bound_cache(ort_version):  # it could not be validated (nor run) here
        log.warning("onnxruntime %s cannot run decoder_ort.onnx; the bundle gets the portable decoder only",
                    ort_version)
        del specs["decoder_ort"], specs["cross_ort"]
    t0 = time.time()
    export_graph(EncoderGraph(model), specs["encoder"], out / specs["encoder"].file, opset, cfg, max_new_tokens)
    export_graph(DecoderStepGraph(model), specs["decoder"], out / specs["decoder"].file, opset, cfg, max_new_tokens)
    if "decoder_ort" in specs:
        export_ort_decoder(model, specs, out, opset)
    export_s = time.time() - t0
    failures = [f for name, spec in specs.items() for f in check_graph(out / spec.file, spec)]
    parity = ParityReport()
    if verify and not failures:
        parity, more = check_parity(model, out / specs["encoder"].file, out / specs["decoder"].file,
                                    max_new_tokens, atol=atol,
                                    ort_paths=(out / specs["cross_ort"].file, out / specs["decoder_ort"].file)
                                    if "decoder_ort" in specs else None)
        failures += more
    report = Verification(export_seconds=round(export_s, 2), checks=CHECKS, parity=parity if verify else None,
                          failures=tuple(failures))
    if failures:
        raise ValidationError(failures, report.to_dict())
    graphs = {name: spec.to_dict() for name, spec in specs.items()}
    heads = attribute_heads_layout(cfg)
    if heads is not None:
        records, source = held_out or ([], "no held-out data given")
        graphs["encoder"]["attribute_heads"] = calibrate_heads(model, heads, records, source).to_dict()
    return Manifest.create(
        model=cfg.to_dict(),
        tokens=vocab.itos,
        special={name.strip("<>"): i for i, name in enumerate(SPECIALS)},
        preprocess={
            "height": cfg.image_size[0], "width": cfg.image_size[1], "resize": "stretch", "interpolation": "bilinear",
            "scale": 1 / 255, "mean": list(cfg.mean), "std": list(cfg.std), "channel_order": "RGB", "layout": "NCHW",
        },
        graphs=graphs,
        limits=Limits(max_batch=max_batch, max_new_tokens=max_new_tokens, max_positions=cfg.max_len),
        opset=opset,
        producer=producer_versions(),
        artifacts={spec.file: artifact_entry(out, spec.file) for spec in specs.values()},
        verification=report,
    )


def export_graph(module: torch.nn.Module, spec: GraphSpec, path: Path, opset: int, cfg: Any, cache: int) -> None:
    """torch.export-based ONNX export of one graph with the spec's names and dynamic dimensions."""
    examples = example_inputs(spec, batch=2, cache=cache)
    dims = {"batch": torch.export.Dim("batch", min=1, max=4096), "cache": torch.export.Dim("cache", min=2, max=cfg.max_len)}
    dynamic_shapes = {
        name: {axis: dims[d] for axis, d in enumerate(t.shape) if isinstance(d, str)} or None
        for name, t in spec.inputs.items()
    }
    # The exporter is chatty (stdout progress, warnings); the validation report is what counts.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, tuple(examples.values()), input_names=list(spec.inputs), output_names=list(spec.outputs),
            dynamic_shapes=tuple(dynamic_shapes.values()), opset_version=opset, dynamo=True, external_data=False,
            optimize=True, verbose=False,
        )
    program.save(str(path))


def example_inputs(spec: GraphSpec, batch: int, cache: int) -> dict[str, torch.Tensor]:
    """Concrete example tensors for a spec (``batch``/``cache`` dims filled in)."""
    sizes = {"batch": batch, "cache": cache}
    out = {}
    for name, t in spec.inputs.items():
        shape = [sizes[d] if isinstance(d, str) else d for d in t.shape]
        out[name] = torch.zeros(shape, dtype=torch.int64) if t.dtype == "int64" else torch.randn(shape)
    return out


def _plain(obj: Any) -> Any:
    """JSON-safe copy of checkpoint meta."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool)) or obj is None else str(obj)
