"""``pvlm-train``: a thin click wrapper over :func:`pvlm.train.train`."""

from __future__ import annotations

import logging

import click

from .cli_errors import fail_on_bad_input, parse_size
from .model import PRESETS


@click.command(context_settings={"show_default": True})
@click.argument("train_jsonl", type=click.Path(dir_okay=False))
@click.option("--val", "val_jsonl", type=click.Path(dir_okay=False), help="Validation JSONL (default: hold out --val-fraction).")
@click.option("--image-root", type=click.Path(file_okay=False), help="Folder that relative image paths resolve against.")
@click.option("--out", default="runs/train", help="Output folder for best.pt, last.pt, history.json.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="small")
@click.option("--image-size", help="Override the preset input size, HxW (multiples of 32).")
@click.option("--epochs", type=click.IntRange(min=1), default=10)
@click.option("--batch-size", type=click.IntRange(min=1), default=32)
@click.option("--accum-steps", type=click.IntRange(min=1), default=1, help="Gradient accumulation steps.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=100)
@click.option("--label-smoothing", type=click.FloatRange(0, 1), default=0.1)
@click.option("--grad-clip", type=click.FloatRange(min=0, min_open=True), default=1.0)
@click.option("--freeze-ratio", type=click.FloatRange(0, 1), default=None, show_default="the preset's",
              help="Fraction of backbone tensors frozen (whole blocks, from the stem on).")
@click.option("--backbone-lr-scale", type=click.FloatRange(min=0, min_open=True), default=0.1,
              help="Unfrozen backbone layers learn at --lr times this.")
@click.option("--no-augment", is_flag=True, help="No crop/brightness/flip augmentation.")
@click.option("--cache-copies", type=click.IntRange(min=0), default=0,
              help="CPU: run the frozen backbone blocks once per image for N augmentation copies, not every step.")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (fix for identical reruns).")
@click.option("--min-freq", type=click.IntRange(min=1), default=2, help="Vocabulary minimum token frequency.")
@click.option("--max-vocab", type=click.IntRange(min=5), default=5000)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimizer steps.")
@click.option("--seed", type=int, default=0)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("--no-amp", is_flag=True, help="Disable mixed precision on CUDA.")
@click.option("--resume", type=click.Path(dir_okay=False), help="Continue from a last.pt checkpoint.")
@click.option("--workers", type=click.IntRange(min=0), default=0, help="DataLoader worker processes.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(train_jsonl: str, val_jsonl: str | None, image_root: str | None, out: str, preset: str,
         image_size: str | None, epochs: int, batch_size: int, accum_steps: int, lr: float, weight_decay: float,
         warmup_steps: int, label_smoothing: float, grad_clip: float, freeze_ratio: float | None,
         backbone_lr_scale: float, no_augment: bool, cache_copies: int, threads: int | None, min_freq: int,
         max_vocab: int, max_steps: int | None, seed: int, device: str, no_amp: bool, resume: str | None,
         workers: int, quiet: bool) -> None:
    """Train a PersonVLM on an MSP60k-style JSONL dataset (e.g. from `pvlm-data synth`)."""
    from .train import TrainConfig, train

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    cfg = TrainConfig(
        train=train_jsonl, val=val_jsonl, image_root=image_root, out=out, preset=preset,
        image_size=parse_size(image_size, "--image-size") if image_size else None, epochs=epochs,
        batch_size=batch_size, accum_steps=accum_steps, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        label_smoothing=label_smoothing, grad_clip=grad_clip, freeze_ratio=freeze_ratio,
        backbone_lr_scale=backbone_lr_scale, augment=not no_augment, cache_copies=cache_copies, threads=threads, min_freq=min_freq,
        max_vocab=max_vocab, max_steps=max_steps, seed=seed, device=device, amp=not no_amp, resume=resume,
        num_workers=workers, progress=not quiet,
    )
    with fail_on_bad_input():
        result = train(cfg)
    click.echo(f"best checkpoint: {result['best']} (val loss {result['best_val_loss']:.3f}, "
               f"unigram baseline {result['unigram_val_loss']:.3f})")
    click.echo(f"last checkpoint: {result['last']}\nhistory: {result['history']}")
