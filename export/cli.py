"""``pvlm-export``: thin click commands over the export library."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from runtime.cli_common import (CONTEXT_SETTINGS, CommandFailure, Group, common_options, fail_on_bad_input,
                                version_option, writing)
from runtime.verification import Verification


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@version_option
def main() -> None:
    """Export a trained PersonVLM for deployment (ONNX first; engines build from its bundle)."""


@main.command("onnx")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Bundle directory (default: CHECKPOINT without .pt).")
@click.option("--opset", type=int, default=20, help="ONNX opset (>= 18; 20 has a Gelu op).")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, help="Largest batch the runtime will send.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=48, help="Decoder cache capacity.")
@click.option("--vocab", type=click.Path(dir_okay=False), help="vocabulary.json, for original-repository checkpoints.")
@click.option("--force", is_flag=True, help="Replace --out if it is an export bundle or empty (anything else is refused).")
@click.option("--fp16", is_flag=True, help="Also write FP16 graphs (FP32 I/O), verified against PyTorch FP32.")
@click.option("--int8", is_flag=True, help="Also write INT8 graphs for CPUs (ONNX Runtime quantization), verified.")
@click.option("--calibration", type=click.Path(dir_okay=False, exists=True),
              help="JSONL of images to calibrate INT8 on (default: synthetic person crops).")
@click.option("--calibration-data", type=click.Path(dir_okay=False, exists=True),
              help="JSONL of labelled crops to calibrate the attribute heads on (default: the checkpoint's "
                   "validation split).")
@click.option("--accept-mismatch", is_flag=True, help="Keep FP16/INT8 graphs that miss their gate (attribute agreement, confident divergences; "
                   "docs/precision.md).")
@click.option("--cross-attention", type=click.Choice(["auto", "tables", "attention"]), default="auto", show_default=True,
              help="decoder_ort's cross-attention: per-batch tables (fastest at small batches) or the attention "
                   "kernel on K/V (fastest at large ones); auto picks by the model's shape.")
@click.option("--json", "as_json", is_flag=True, help="Print the verification report as JSON to stdout.")
@common_options()
def onnx_cmd(checkpoint: str, out_dir: str | None, opset: int, max_batch: int, max_new_tokens: int,
             vocab: str | None, force: bool, fp16: bool, int8: bool, calibration: str | None,
             calibration_data: str | None, accept_mismatch: bool, cross_attention: str, as_json: bool) -> None:
    """Export CHECKPOINT to a verified bundle directory.

    \b
    manifest.json          config, vocabulary, preprocessing, graph I/O, sha256, parity report
    encoder.onnx           pixels -> visual tokens and each layer's cross-attention K/V
    decoder.onnx           one decoding step, KV cache as explicit tensors (portable)
    decoder_ort.onnx       the same step on ONNX Runtime's fused kernels (onnxruntime >= 1.31)
    cross_ort.onnx         per-batch cross-attention inputs (tables or K/V) for decoder_ort.onnx
    README.md              model card: intended use, limits, data, parity, vocabulary
    description.schema.json  JSON Schema of a `pvlm-describe --json` line
    *.fp16.onnx, *.int8.onnx  precision variants (--fp16, --int8), verified against PyTorch FP32
    """
    from pvlm.checkpoint import CheckpointError
    from runtime.bundle import Bundle

    from .calibration import calibration_lines
    from .onnx import export_onnx
    from .validate import ValidationError
    from .variants import VariantOptions, summary

    t0 = time.time()
    click.echo(f"exporting {checkpoint} (opset {opset}, max batch {max_batch}, {max_new_tokens} new tokens)...", err=True)
    out = out_dir or str(Path(checkpoint).with_suffix(""))  # export_onnx's default, to name in errors
    try:
        # writing(): a full disk mid-export is one line naming the bundle (nothing is left half-written)
        with writing(out), fail_on_bad_input(CheckpointError):
            bundle = export_onnx(checkpoint, out_dir, opset=opset, max_batch=max_batch,
                                 max_new_tokens=max_new_tokens, force=force, vocab=vocab,
                                 precisions=tuple(p for p, on in (("fp16", fp16), ("int8", int8)) if on),
                                 variant_options=VariantOptions(calibration=calibration and Path(calibration)),
                                 accept_mismatch=accept_mismatch, cross_attention=cross_attention,
                                 calibration_data=calibration_data)
    except ValidationError as e:
        for f in e.failures:
            click.echo(f"  \u2717 {f}", err=True)
        raise CommandFailure(f"validation failed ({len(e.failures)} problem(s)); no bundle written") from None
    manifest = Bundle.load(bundle, verify=False).manifest  # just written and verified by export_onnx
    report = manifest.verification
    variants = manifest.variant_reports
    heads = manifest.attribute_heads
    if as_json:
        out = {**report.to_dict(), **({"variants": variants} if variants else {}),
               **({"attribute_calibration": heads.calibration} if heads is not None else {})}
        click.echo(json.dumps(out, indent=2))
    else:
        print_report(report)
        for line in calibration_lines(heads.calibration) if heads is not None else []:
            click.echo(f"  {line}")
        for precision, rep in variants.items():
            mark = "\u2717" if rep["accepted_mismatch"] else "\u2713"
            click.echo(f"  {mark} {summary(precision, rep)}")
    click.echo(f"bundle: {bundle} ({time.time() - t0:.1f} s)", err=as_json)  # --json: stdout is JSON only


def print_report(report: Verification) -> None:
    """Tick per check, with the parity numbers of every decoder graph."""
    p = report.parity
    click.echo(f"  \u2713 {report.checks}")
    if p is None:
        return
    click.echo(f"  \u2713 encoder outputs: max abs diff {p.encoder_max_abs_diff:.2e} vs PyTorch")
    for name, g in p.decoders.items():
        click.echo(f"  \u2713 {name} step logits: max abs diff {g.logits_max_abs_diff:.2e} over {g.steps_compared} "
                   f"steps (max |logit| {p.logits_max_abs:.2f})")
        click.echo(f"  \u2713 {name} greedy sequences identical: {g.sequences_identical}/{p.images} images "
                   f"(batches {list(p.batch_sizes)}, token agreement {g.token_agreement:.4f})")


@main.command("trt")
@click.argument("bundle", type=click.Path())
@click.option("--fp16", is_flag=True, help="FP16 engines (the precision plan's layers stay FP32); default FP32.")
@click.option("--opt-batch", type=click.IntRange(min=1), default=8, help="Batch the tactics are tuned for.")
@click.option("--workspace-gib", type=click.FloatRange(min=0.1), help="Builder workspace limit (default: TensorRT's).")
@click.option("--force", is_flag=True, help="Rebuild engines the bundle already has.")
@click.option("--typing", type=click.Choice(["auto", "strong", "weak"]), default="auto", show_default=True,
              help="strong: build from the verified FP16 graph (TensorRT 11 needs it); weak: FP16 flag plus FP32 "
                   "pins; auto: strong where the bundle has FP16 graphs or on TensorRT 11 (docs/hardware.md).")
@common_options()
def trt_cmd(bundle: str, fp16: bool, opt_batch: int, workspace_gib: float | None, force: bool, typing: str,
            quiet: bool) -> None:
    """Build TensorRT engines for BUNDLE's encoder and decoder step (needs TensorRT 10 and an NVIDIA GPU)."""
    from runtime.bundle import BundleError

    from .trt import TrtUnavailable, build_engines

    with writing(bundle), fail_on_bad_input(BundleError, TrtUnavailable):
        engines = build_engines(bundle, fp16=fp16, opt_batch=opt_batch, workspace_gib=workspace_gib, force=force,
                                typing=typing, progress=not quiet)
    for e in engines:
        click.echo(f"  \u2713 {e.file}: {e.bytes / 1e6:.1f} MB, {e.precision}, {e.build['fp32_layers']} FP32 "
                   f"layers ({e.build.get('typing', 'weak')} typing), TensorRT {e.target['tensorrt']} on {e.target['gpu']} "
                   f"(sm {e.target['compute_capability']})")
    click.echo(f"engines: {len(engines)} in {bundle}")


@main.command("coreml")
@click.argument("source", type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Bundle to add the packages to (default: SOURCE when it is a bundle, else CHECKPOINT without .pt).")
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16", help="ML program compute precision.")
@click.option("--force", is_flag=True, help="Replace packages the bundle already has.")
@common_options()
def coreml_cmd(source: str, out_dir: str | None, precision: str, force: bool, quiet: bool) -> None:
    """Convert the two graphs to CoreML ML programs (.mlpackage) in a bundle; SOURCE is a CHECKPOINT or a BUNDLE."""
    from pvlm.checkpoint import CheckpointError
    from runtime.bundle import BundleError

    from .coreml import CoreMLUnavailable, export_coreml

    out = out_dir or (source if Path(source).is_dir() else str(Path(source).with_suffix("")))  # as export_coreml
    with writing(out), fail_on_bad_input(CheckpointError, BundleError, CoreMLUnavailable):
        engines = export_coreml(source, out_dir, precision=precision, force=force, progress=not quiet)
    for e in engines:
        click.echo(f"  \u2713 {e.file}: {e.bytes / 1e6:.1f} MB, {e.precision} compute, "
                   f"inputs {', '.join(e.io['inputs'])}; outputs {', '.join(e.io['outputs'])}")
    click.echo(f"coreml: {len(engines)} packages")


@main.command("triton")
@click.argument("bundle", type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Model repository to write.")
@click.option("--max-batch", type=click.IntRange(min=1), default=8, help="Describer max_batch_size (<= the bundle's).")
@click.option("--queue-delay-ms", type=click.FloatRange(min=0), default=50.0,
              help="Dynamic batcher: run a batch when full or after this delay.")
@click.option("--instances", type=click.IntRange(min=1), default=1, help="Instances of each model.")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), default="cpu", help="Instance group kind.")
@click.option("--flavor", type=click.Choice(["native", "python"]), default="native",
              help="native: ONNX Runtime / TensorRT backends; python: Python-backend models running ONNX Runtime.")
@click.option("--force", is_flag=True, help="Replace --out if it is a repository written here or empty (anything else is refused).")
@common_options()
def triton_cmd(bundle: str, out_dir: str, max_batch: int, queue_delay_ms: float, instances: int, kind: str,
               flavor: str, force: bool) -> None:
    """Write a Triton Inference Server model repository for BUNDLE (encoder, decoder step, describer)."""
    from .triton import write_triton_repo

    with writing(out_dir), fail_on_bad_input():
        repo = write_triton_repo(bundle, out_dir, max_batch=max_batch, queue_delay_ms=queue_delay_ms,
                                 instances=instances, kind=kind, flavor=flavor, force=force)
    for model in sorted(p.name for p in repo.iterdir() if p.is_dir()):
        click.echo(f"  \u2713 {model}", err=True)
    click.echo(f"repository: {repo} ({flavor} flavor, {kind}, max batch {max_batch}, "
               f"queue delay {queue_delay_ms:g} ms)")


__all__ = ["main"]
