"""``pvlm-bench``: latency/throughput of runtime backends against PyTorch baselines, in one run."""

from __future__ import annotations

import json
import re

import click

from pvlm.preset_names import preset_names
from runtime.atomic import write_json, write_text
from runtime.backends import NAMES as RUNTIME_BACKENDS
from runtime.cli_common import CONTEXT_SETTINGS, ChoiceList, Command, common_options, fail_on_bad_input

from .native_runner import NATIVE_BACKENDS
from .speed_runners import RUNTIME_VARIANTS, TORCH_BACKENDS


def _split(values: tuple[str, ...]) -> list[str]:
    return [v for item in values for v in item.replace(",", " ").split()]


DECODING_LABEL = r"greedy|sample|original|beams\d+"
BACKEND_NAMES = (*TORCH_BACKENDS, *RUNTIME_BACKENDS, *RUNTIME_VARIANTS, *NATIVE_BACKENDS)
PRECISION_NAMES = ("auto", "fp32", "fp16", "int8")


class MultiValueCommand(Command):
    """Lets ``--batch-size 1 8 32`` mean ``--batch-size 1 --batch-size 8 --batch-size 32`` (likewise --backend,
    --token-sweep, --concurrency and the deprecated --batch)."""

    accepts = {"--batch-size": str.isdigit, "--batch": str.isdigit, "--token-sweep": str.isdigit,
               "--concurrency": str.isdigit, "--backend": BACKEND_NAMES.__contains__,
               "--decoding": lambda v: bool(re.fullmatch(DECODING_LABEL, v)),
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


@click.command(cls=MultiValueCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("bundle", required=False, type=click.Path(file_okay=False))
@click.option("--preset", type=click.Choice(preset_names()),
              help="Benchmark a random-init model of this preset (exported to a temporary bundle; default seed-7m).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="PyTorch checkpoint for the torch baselines.")
@click.option("--backend", "backends", multiple=True, default=("torch-original", "onnxruntime-cpu"),
              type=ChoiceList(BACKEND_NAMES),
              help="Repeat or comma-separate; the first is the baseline: torch, torch-naive, torch-original (the "
                   "original repository's loop), a runtime backend, onnxruntime-cpu-portable (decoder.onnx), or "
                   "native-cpu / native-cpu-int8 (the C++ runtime, runtime/native; build it with .ci/native.sh).")
@click.option("--precision", "precisions", multiple=True, default=("auto",),
              help="Rows per precision after each ONNX Runtime backend (fp32, fp16, int8; repeat or comma-separate); "
                   "auto: every precision the bundle holds.")
@click.option("--decoding", "decodings", multiple=True, default=("greedy",),
              help="Rows per decoding for each ONNX Runtime backend (repeat or space-separate): greedy, beamsN (beam "
                   "search, e.g. beams3), sample, original (sampling at the original repository's settings); each "
                   "row is compared with its backend's greedy row. Beam search and sampling stop at EOS.")
@click.option("--batch-size", "batches", multiple=True, default=("1", "32"),
              help="Batch sizes (repeat or space-separate).")
@click.option("--batch", "old_batches", multiple=True, hidden=True, help="Deprecated spelling of --batch-size.")
@click.option("--new-tokens", type=click.IntRange(min=1), default=48, help="Tokens per description (fixed work).")
@click.option("--natural", is_flag=True, help="Stop at EOS instead of decoding a fixed number of tokens.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, help="Untimed iterations per backend and batch size.")
@click.option("--iters", type=click.IntRange(min=1), default=5, help="Timed iterations per backend and batch size.")
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads for every backend.")
@click.option("--gap", type=click.FloatRange(min=0), default=0.3, show_default=True,
              help="Idle seconds before every timed call, so the previous backend's threads stop spinning.")
@click.option("--token-sweep", multiple=True, help="Also time the decoder step at these token counts, e.g. 16 32 64 128.")
@click.option("--camera-rate", type=click.FloatRange(min=0, min_open=True), default=2.0,
              help="Descriptions per camera per second, for the capacity estimate.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON to stdout (instead of the table).")
@click.option("--json-out", "json_path", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write a markdown report.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write one CSV row per backend and batch size.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write a PNG: p50 latency with p99 whiskers, and throughput, per batch size (needs matplotlib).")
@click.option("--server", metavar="URL",
              help="Load-test a running pvlm-serve instead (http://HOST:PORT or grpc://HOST:PORT): p50/p99 latency "
                   "and throughput at each --concurrency.")
@click.option("--concurrency", multiple=True, default=("1", "8", "32"),
              help="--server: concurrent clients, one request in flight each (repeat or space-separate).")
@click.option("--requests", type=click.IntRange(min=1), default=64,
              help="--server: answered requests per concurrency level (after a warm-up round).")
@common_options()
def main(bundle: str | None, preset: str | None, checkpoint: str | None, backends: tuple[str, ...],
         precisions: tuple[str, ...], decodings: tuple[str, ...], batches: tuple[str, ...], old_batches: tuple[str, ...], server: str | None,
         concurrency: tuple[str, ...],
         requests: int, new_tokens: int, natural: bool, warmup: int, iters: int, threads: int | None, gap: float,
         token_sweep: tuple[str, ...], camera_rate: float, as_json: bool, json_path: str | None,
         md_path: str | None, csv_path: str | None, plot_path: str | None, quiet: bool) -> None:
    """Benchmark BUNDLE (or --preset) on each --backend at each --batch-size."""
    from . import speed_report as rep
    from .speed import BenchConfig, run_bench

    if server:
        return _server_mode(server, concurrency, requests, as_json, json_path, csv_path, plot_path, quiet)
    if old_batches:
        click.echo("warning: --batch is deprecated; use --batch-size", err=True)
        batches = old_batches
    with fail_on_bad_input(KeyError):
        try:
            cfg = BenchConfig(
                bundle=bundle, preset=None if bundle else (preset or "seed-7m"), checkpoint=checkpoint,
                backends=tuple(_split(backends)), precisions=tuple(_split(precisions)),
                decodings=tuple(_split(decodings)),
                batches=tuple(int(b) for b in _split(batches)),
                new_tokens=new_tokens, natural=natural, warmup=warmup, iters=iters, threads=threads, gap_s=gap,
                token_sweep=tuple(int(t) for t in _split(token_sweep)), descriptions_per_camera_s=camera_rate,
                progress=not quiet)
        except ValueError as e:
            raise ValueError(f"--batch-size/--token-sweep must be integers ({e})") from None
        bad = [p for p in cfg.precisions if p not in PRECISION_NAMES]
        if bad:
            raise ValueError(f"--precision {bad[0]!r}: choose from {', '.join(PRECISION_NAMES)}")
        if any(b < 1 for b in cfg.batches):
            raise ValueError("--batch-size values must be >= 1")
        result = run_bench(cfg)
        if plot_path:
            rep.plot(result, plot_path)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(rep.table(result))
        for line in rep.comparison_lines(result) + [rep.capacity_line(result)]:
            click.echo(line)
    if json_path:
        write_json(json_path, result)
    if md_path:
        write_text(md_path, rep.markdown(result))
    if csv_path:
        write_text(csv_path, rep.csv_text(result))


def _server_mode(url: str, concurrency: tuple[str, ...], requests: int, as_json: bool, json_path: str | None,
                 csv_path: str | None, plot_path: str | None, quiet: bool) -> None:
    """``--server``: closed-loop load on a running pvlm-serve (bench/speed_server.py)."""
    from .speed_server import LoadConfig, run_server_load, server_csv, server_table

    with fail_on_bad_input():
        if plot_path:
            raise ValueError("--plot is for the local benchmark, not --server")
        levels = _split(concurrency)
        if not all(c.isdigit() for c in levels):
            raise ValueError(f"--concurrency must be integers, got {' '.join(levels)}")
        report = run_server_load(LoadConfig(url=url, concurrency=tuple(int(c) for c in levels), requests=requests,
                                            progress=not quiet))
    click.echo(json.dumps(report, indent=2) if as_json else server_table(report))
    if json_path:
        write_json(json_path, report)
    if csv_path:
        write_text(csv_path, server_csv(report))
