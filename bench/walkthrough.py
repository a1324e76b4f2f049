"""``pvlm-quickstart``: the whole story on built-in defaults, on a CPU machine, in minutes.

synthesise data -> train a small model -> export to ONNX (verified) -> describe held-out
images with ``runtime.Describer`` -> evaluate (metrics + HTML) -> benchmark against PyTorch.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click

from pvlm.preset_names import preset_names
from runtime.atomic import write_json, write_text
from runtime.cli_common import CONTEXT_SETTINGS, Command, common_options, fail_on_bad_input, parse_size


def _step(title: str) -> float:
    click.secho(f"\n== {title}", bold=True)
    return time.time()


@click.command(cls=Command, context_settings=CONTEXT_SETTINGS)
@click.option("--out", default="runs/quickstart", type=click.Path(file_okay=False), help="Where every artefact goes.")
@click.option("--n", "n_images", type=click.IntRange(min=64), default=3000, help="Synthetic training+validation images.")
@click.option("--test-n", type=click.IntRange(min=8), default=300, help="Held-out test images (a different seed).")
@click.option("--test-size", default="256x128",
              help="HxW of the held-out crops (another size than training: real crops come at every size).")
@click.option("--epochs", type=click.IntRange(min=1), default=8, help="Training epochs.")
@click.option("--preset", type=click.Choice(preset_names()), default="lite0",
              help="Model preset to train (lite0: ImageNet-pretrained EfficientNet-Lite0).")
@click.option("--cache-copies", type=click.IntRange(min=0), default=2,
              help="Frozen backbone blocks run once per image for this many augmentation copies (0: every step).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="torch threads for training, fixed so reruns are identical (use 1 on cores other jobs share).")
@click.option("--seed", type=int, default=0, help="Training seed (the held-out set always uses seed 12345).")
@click.option("--priors", type=click.Choice(("street", "uniform")), default="uniform", show_default=True,
              help="Synthetic recipe of every split: uniform (every value equally often) or street "
                   "(experimental: frequencies of pedestrian footage, photographic backgrounds, camera effects).")
@click.option("--bench-iters", type=click.IntRange(min=1), default=3, help="Timed benchmark iterations per point.")
@click.option("--force", is_flag=True, help="Replace --out if it is a pvlm-quickstart folder (anything else is refused).")
@common_options()
def main(out: str, n_images: int, test_n: int, test_size: str, epochs: int, preset: str, cache_copies: int,
         threads: int, seed: int, priors: str, bench_iters: int, force: bool) -> None:
    """Run synth -> train -> export -> describe -> eval -> bench and print where everything went."""
    root = Path(out)
    with fail_on_bad_input():
        test_hw, train_hw = _prepare(root, force, preset, test_size)
        t_all = time.time()
        data, test, test_same = _synth(root, n_images, test_n, test_hw, train_hw, priors)
        res = _train(root, data, preset, epochs, seed, cache_copies, threads)
        bundle = _export(root, res["best"])
        _describe_some(root, bundle, test["data"])
        _evaluate(root, bundle, test["data"], test_same["data"], test_hw, train_hw)
        _bench(root, bundle, res["best"], bench_iters)

    click.secho(f"\ndone in {(time.time() - t_all) / 60:.1f} min. Artefacts:", bold=True)
    for label, path in [("data", root / "data"), ("held-out test", root / "test"), ("checkpoint", res["best"]),
                        ("training history", res["history"]), ("bundle", bundle), ("eval report", root / "eval.html"),
                        ("eval JSON", root / "eval.json"), ("benchmark", root / "bench.md")]:
        click.echo(f"  {label:17s} {path}")


def _prepare(root: Path, force: bool, preset: str, test_size: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Check and (re)create ``root``; the held-out and training crop sizes."""
    from pvlm.model import PRESETS, PersonVLMConfig
    from pvlm.outdir import check_replaceable, is_quickstart_dir

    check_replaceable(root, force, is_quickstart_dir, "a pvlm-quickstart folder")
    if root.is_dir() and any(root.iterdir()):  # ours (checked above), and rebuilt step by step
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    if preset not in PRESETS:
        raise ValueError(f"--preset: unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return parse_size(test_size, "--test-size"), PersonVLMConfig.preset(preset).image_size


def _synth(root: Path, n_images: int, test_n: int, test_hw: tuple[int, int], train_hw: tuple[int, int],
           priors: str = "uniform") -> tuple[dict, dict, dict]:
    """Step 1: training+validation crops, held-out crops at another size, and the same people at the training size."""
    from pvlm.synth import SynthConfig, write_dataset

    t = _step(f"1/6 synthesising {n_images} training+validation crops at {train_hw[0]}x{train_hw[1]} and "
              f"{test_n} held-out ones at {test_hw[0]}x{test_hw[1]} (another seed and size; {priors} recipe)")
    data = write_dataset(root / "data", SynthConfig(n=n_images, seed=0, size=train_hw, val_fraction=0.1,
                                                    priors=priors))
    test = write_dataset(root / "test", SynthConfig(n=test_n, seed=12345, size=test_hw, val_fraction=0.0,
                                                    priors=priors))
    # the same people at the training size: accuracy must not depend on the crop's resolution
    test_same = write_dataset(root / "test-train-size", SynthConfig(n=test_n, seed=12345, size=train_hw,
                                                                    val_fraction=0.0, priors=priors))
    click.echo(f"train {data['train']}, val {data['val']}, test {test['data']} ({time.time() - t:.0f} s)")
    return data, test, test_same


def _train(root: Path, data: dict, preset: str, epochs: int, seed: int, cache_copies: int, threads: int) -> dict:
    """Step 2: train the preset; the training result (``best``, ``history``, ``epochs``)."""
    from pvlm.train import TrainConfig, train

    t = _step(f"2/6 training preset '{preset}' for {epochs} epochs")
    res = train(TrainConfig(train=str(data["train"]), val=str(data["val"]), out=str(root / "train"), preset=preset,
                            epochs=epochs, batch_size=32, lr=2e-3, warmup_steps=100, min_freq=2, seed=seed,
                            cache_copies=cache_copies, threads=threads))
    first, last = res["epochs"][0], res["epochs"][-1]
    click.echo(f"val loss {first['val_loss']:.3f} -> {last['val_loss']:.3f} "
               f"(unigram baseline {res['unigram_val_loss']:.3f}); best {res['best']} ({time.time() - t:.0f} s)")
    return res


def _export(root: Path, checkpoint: str | Path) -> Path:
    """Step 3: the verified ONNX bundle."""
    from export import export_onnx
    from runtime.bundle import Bundle

    t = _step("3/6 exporting to ONNX with verification")
    bundle = export_onnx(checkpoint, root / "bundle", max_batch=32, max_new_tokens=48, force=True)
    parity = Bundle.load(bundle, verify=False).manifest.parity
    click.echo(f"bundle {bundle}: greedy sequences identical {parity.decoder.sequences_identical}/{parity.images}, "
               f"logits max abs diff {parity.decoder.logits_max_abs_diff:.1e} ({time.time() - t:.0f} s)")
    return bundle


def _describe_some(root: Path, bundle: Path, data: str | Path) -> None:
    """Step 4: four held-out crops described by the runtime, beside their reference captions."""
    from runtime import Describer

    _step("4/6 describing held-out images with runtime.Describer (ONNX Runtime, no torch)")
    rows = [json.loads(line) for line in Path(data).read_text().splitlines()[:4]]
    with Describer(bundle, backend="onnxruntime-cpu") as d:
        for row, desc in zip(rows, d.describe([str(root / "test" / r["image"]) for r in rows])):
            click.echo(f"{row['image']}\n  generated: {desc.text}\n  reference: {row['answer']}")


def _evaluate(root: Path, bundle: Path, data: str | Path, data_same: str | Path, test_hw: tuple[int, int],
              train_hw: tuple[int, int]) -> None:
    """Step 5: metrics and HTML on the held-out set, and attribute accuracy at the training size beside it."""
    from .quality import EvalConfig, evaluate
    from .quality_html import write_html

    t = _step("5/6 evaluating on the held-out set")
    rep = evaluate(EvalConfig(model=str(bundle), data=str(data), backends=("onnxruntime-cpu",)))
    write_json(root / "eval.json", rep, default=str)
    write_html(rep, root / "eval.html")
    _print_eval(rep)
    same = evaluate(EvalConfig(model=str(bundle), data=str(data_same), backends=("onnxruntime-cpu",),
                               reference=False, meteor=False, progress=False))
    write_json(root / "eval-train-size.json", same, default=str)
    a, b = rep["attributes"]["categories"], same["attributes"]["categories"]
    click.echo(f"same people at {train_hw[0]}x{train_hw[1]} (the training size) vs {test_hw[0]}x{test_hw[1]}: " +
               ", ".join(f"{k} {b[k]['accuracy']:.1%} vs {a[k]['accuracy']:.1%}" for k in a
                         if a[k]["accuracy"] is not None and b.get(k, {}).get("accuracy") is not None))
    click.echo(f"({time.time() - t:.0f} s)")


def _bench(root: Path, bundle: Path, checkpoint: str | Path, iters: int) -> None:
    """Step 6: the runtime against the PyTorch baselines, as JSON, Markdown and a console table."""
    from . import speed_report as bench_report
    from .speed import BenchConfig, run_bench

    _step("6/6 benchmarking against the PyTorch baselines (48 tokens, fixed work)")
    bench = run_bench(BenchConfig(bundle=str(bundle), checkpoint=checkpoint,
                                  backends=("torch-original", "torch", "onnxruntime-cpu"), batches=(1, 8, 32),
                                  iters=iters))
    write_json(root / "bench.json", bench)
    write_text(root / "bench.md", bench_report.markdown(bench))
    click.echo(bench_report.table(bench))
    for line in bench_report.comparison_lines(bench) + [bench_report.capacity_line(bench)]:
        click.echo(line)


def _print_eval(rep: dict) -> None:
    cap = rep["caption_metrics"]
    click.echo("caption metrics: " + ", ".join(f"{k} {v:.3f}" for k, v in cap.items() if isinstance(v, float)))
    cats = rep["attributes"]["categories"]
    click.echo("attribute accuracy (majority-class rate in brackets):")
    for k, v in cats.items():
        acc, maj = v["accuracy"], v.get("majority_rate")
        if acc is None:
            continue
        click.echo(f"  {k:<12} {acc:6.1%}  ({maj:.1%} {v.get('majority')}; model's commonest answer "
                   f"{v.get('top_prediction')} {v.get('top_prediction_rate', 0):.0%})")
    parity = rep["parity"]
    if not parity.get("backends"):
        click.echo(f"no backend parity: {parity.get('reason')}")
    for name, p in (parity.get("backends") or {}).items():
        click.echo(f"parity {name} vs PyTorch FP32: exact sequences {p['exact_match_rate']:.1%}, "
                   f"token agreement {p['token_agreement']:.1%}")
