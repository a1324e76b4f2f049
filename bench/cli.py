"""``pvlm-bench``: latency/throughput of runtime backends against PyTorch baselines, in one run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from pvlm.cli_errors import fail_on_bad_input
from runtime.backends import NAMES as RUNTIME_BACKENDS

from .runners import RUNTIME_VARIANTS, TORCH_BACKENDS


def _split(values: tuple[str, ...]) -> list[str]:
    return [v for item in values for v in item.replace(",", " ").split()]


BACKEND_NAMES = (*TORCH_BACKENDS, *RUNTIME_BACKENDS, *RUNTIME_VARIANTS)
PRECISION_NAMES = ("auto", "fp32", "fp16", "int8")


class MultiValueCommand(click.Command):
    """Lets ``--batch 1 8 32`` mean ``--batch 1 --batch 8 --batch 32`` (likewise --backend, --token-sweep)."""

    accepts = {"--batch": str.isdigit, "--token-sweep": str.isdigit, "--backend": BACKEND_NAMES.__contains__,
               "--precision": PRECISION_NAMES.__contains__}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        current, pending = None, False
        for a in args:
            if a in self.accepts:
                current, pending = a, True
                out.append(a)
            elif pending:
                out.append(a)
                pending = False
            elif current and self.accepts[current](a):
                out += [current, a]
            else:
                current = None
                out.append(a)
        return super().parse_args(ctx, out)


@click.command(cls=MultiValueCommand, context_settings={"show_default": True})
@click.argument("bundle", required=False, type=click.Path(file_okay=False))
@click.option("--preset", help="Benchmark a random-init model of this preset (exported to a temporary bundle).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="PyTorch checkpoint for the torch baselines.")
@click.option("--backend", "backends", multiple=True, default=("torch-original", "onnxruntime-cpu"),
              help="Repeat or comma-separate; the first is the baseline: torch, torch-naive, torch-original (the "
                   "original repository's loop), a runtime backend, or onnxruntime-cpu-portable (decoder.onnx).")
@click.option("--precision", "precisions", multiple=True, default=("auto",),
              help="Rows per precision after each ONNX Runtime backend (fp32, fp16, int8; repeat or comma-separate); "
                   "auto: every precision the bundle holds.")
@click.option("--batch", "batches", multiple=True, default=("1", "32"), help="Batch sizes (repeat or space-separate).")
@click.option("--new-tokens", type=click.IntRange(min=1), default=48, help="Tokens per description (fixed work).")
@click.option("--natural", is_flag=True, help="Stop at EOS instead of decoding a fixed number of tokens.")
@click.option("--warmup", type=click.IntRange(min=0), default=1)
@click.option("--iters", type=click.IntRange(min=1), default=5)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads for every backend.")
@click.option("--token-sweep", multiple=True, help="Also time the decoder step at these token counts, e.g. 16 32 64 128.")
@click.option("--camera-rate", type=click.FloatRange(min=0, min_open=True), default=2.0,
              help="Descriptions per camera per second, for the capacity estimate.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write a markdown report.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a latency-vs-batch PNG.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(bundle: str | None, preset: str | None, checkpoint: str | None, backends: tuple[str, ...],
         precisions: tuple[str, ...], batches: tuple[str, ...], new_tokens: int, natural: bool, warmup: int, iters: int, threads: int | None,
         token_sweep: tuple[str, ...], camera_rate: float, json_path: str | None, md_path: str | None,
         plot_path: str | None, quiet: bool) -> None:
    """Benchmark BUNDLE (or --preset) on each --backend at each --batch size."""
    from . import report as rep
    from .harness import BenchConfig, run_bench

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with fail_on_bad_input(KeyError):
        try:
            cfg = BenchConfig(
                bundle=bundle, preset=None if bundle else (preset or "seed-7m"), checkpoint=checkpoint,
                backends=tuple(_split(backends)), precisions=tuple(_split(precisions)), batches=tuple(int(b) for b in _split(batches)),
                new_tokens=new_tokens, natural=natural, warmup=warmup, iters=iters, threads=threads,
                token_sweep=tuple(int(t) for t in _split(token_sweep)), descriptions_per_camera_s=camera_rate,
                progress=not quiet)
        except ValueError as e:
            raise ValueError(f"--batch/--token-sweep must be integers ({e})") from None
        bad = [p for p in cfg.precisions if p not in PRECISION_NAMES]
        if bad:
            raise ValueError(f"--precision {bad[0]!r}: choose from {', '.join(PRECISION_NAMES)}")
        if any(b < 1 for b in cfg.batches):
            raise ValueError("--batch values must be >= 1")
        result = run_bench(cfg)
        if plot_path:
            rep.plot(result, plot_path)
    click.echo(rep.table(result))
    for line in rep.comparison_lines(result) + [rep.capacity_line(result)]:
        click.echo(line)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    if md_path:
        Path(md_path).write_text(rep.markdown(result))
