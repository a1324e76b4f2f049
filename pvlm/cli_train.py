"""``pvlm-train``: a thin click wrapper over :func:`pvlm.train.train`."""

from __future__ import annotations

import logging

import click

from runtime.cli_common import (CONTEXT_SETTINGS, Command, CommandError, CommandFailure, common_options,
                                fail_on_bad_input, parse_size)

from .preset_names import preset_names


@click.command(cls=Command, context_settings=CONTEXT_SETTINGS)
@click.argument("train_jsonl", type=click.Path(dir_okay=False))
@click.option("--val", "val_jsonl", type=click.Path(dir_okay=False), help="Validation JSONL (default: hold out --val-fraction of TRAIN_JSONL).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              help="Share of TRAIN_JSONL held out for validation when --val is not given.")
@click.option("--image-root", type=click.Path(file_okay=False), help="Folder that relative image paths resolve against.")
@click.option("--out", default="runs/train", help="Output folder for best.pt, last.pt, history.json.")
@click.option("--preset", type=click.Choice(preset_names()), default="small", help="Model size preset.")
@click.option("--image-size", help="Override the preset input size, HxW (multiples of 32).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, help="Passes over the training set.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per optimizer step (before accumulation).")
@click.option("--accum-steps", type=click.IntRange(min=1), default=1, help="Gradient accumulation steps.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01, help="AdamW weight decay.")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=100, help="Linear learning-rate warm-up steps.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1), default=0.1, help="Cross-entropy label smoothing.")
@click.option("--grad-clip", type=click.FloatRange(min=0, min_open=True), default=1.0, help="Gradient norm clip.")
@click.option("--freeze-ratio", type=click.FloatRange(0, 1), default=None, show_default="the preset's",
              help="Fraction of backbone tensors frozen (whole blocks, from the stem on).")
@click.option("--backbone-lr-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Unfrozen backbone layers learn at --lr times this (below 1: a pretrained start moves less).")
@click.option("--attribute-weight", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Weight of the attribute heads' loss (presets with heads, e.g. lite0; 0: caption loss only).")
@click.option("--no-augment", is_flag=True, help="No crop/brightness/flip augmentation.")
@click.option("--cache-copies", type=click.IntRange(min=0), default=0,
              help="CPU: run the frozen backbone blocks once per image for N augmentation copies, not every step.")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (fix for identical reruns).")
@click.option("--min-freq", type=click.IntRange(min=1), default=2, help="Vocabulary minimum token frequency.")
@click.option("--max-vocab", type=click.IntRange(min=5), default=5000, help="Largest vocabulary (specials included).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimizer steps.")
@click.option("--seed", type=int, default=0, help="Random seed (initialisation, shuffling, validation split).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", help="Training device.")
@click.option("--no-amp", is_flag=True, help="Disable mixed precision on CUDA.")
@click.option("--resume", type=click.Path(dir_okay=False), help="Continue from a last.pt checkpoint.")
@click.option("--workers", type=click.IntRange(min=0), default=0, help="DataLoader worker processes.")
@click.option("--nproc", type=click.IntRange(min=1),
              help="Train in N processes on this machine (DistributedDataParallel, as torchrun --nproc-per-node N; "
                   "--batch-size is the global batch). Several machines: torchrun (docs/datasets.md).")
@common_options(default_level=logging.INFO)
def main(train_jsonl: str, val_jsonl: str | None, val_fraction: float, image_root: str | None, out: str, preset: str,
         image_size: str | None, epochs: int, batch_size: int, accum_steps: int, lr: float, weight_decay: float,
         warmup_steps: int, label_smoothing: float, grad_clip: float, freeze_ratio: float | None,
         backbone_lr_scale: float, attribute_weight: float, no_augment: bool, cache_copies: int,
         threads: int | None, min_freq: int, max_vocab: int, max_steps: int | None, seed: int, device: str,
         no_amp: bool, resume: str | None, workers: int, nproc: int | None, quiet: bool) -> None:
    """Train a PersonVLM on an MSP60k-style JSONL dataset (e.g. from `pvlm-data synth` or `pvlm-data import`)."""
    from .distributed import ProcessFailed, from_env
    from .train import TrainConfig, train, train_processes

    cfg = TrainConfig(
        train=train_jsonl, val=val_jsonl, val_fraction=val_fraction, image_root=image_root, out=out, preset=preset,
        image_size=parse_size(image_size, "--image-size") if image_size else None, epochs=epochs,
        batch_size=batch_size, accum_steps=accum_steps, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        label_smoothing=label_smoothing, grad_clip=grad_clip, freeze_ratio=freeze_ratio,
        backbone_lr_scale=backbone_lr_scale, attribute_weight=attribute_weight, augment=not no_augment,
        cache_copies=cache_copies, threads=threads, min_freq=min_freq, max_vocab=max_vocab, max_steps=max_steps,
        seed=seed, device=device, amp=not no_amp, resume=resume, num_workers=workers, progress=not quiet,
    )
    with fail_on_bad_input():
        if nproc is not None and from_env().active:
            raise ValueError("--nproc: this process was started by torchrun already; give torchrun the process count")
        try:
            result = train(cfg) if nproc is None else train_processes(cfg, nproc)
        except ProcessFailed as e:  # bad input found by a process: exit 2 as in one process; anything else: 1
            bad_input = e.error in ("ValueError", "FileNotFoundError", "FileExistsError", "CheckpointError")
            raise (CommandError if bad_input else CommandFailure)(str(e)) from None
    if not from_env().main:
        return  # under torchrun, rank 0 reports
    click.echo(f"best checkpoint: {result['best']} (val loss {result['best_val_loss']:.3f}, "
               f"unigram baseline {result['unigram_val_loss']:.3f})")
    click.echo(f"last checkpoint: {result['last']}\nhistory: {result['history']}")
