"""Training: AdamW, warmup + cosine, label smoothing, clipping, accumulation, AMP on CUDA, resume, and
DistributedDataParallel under ``torchrun --nproc-per-node N -m pvlm.train ...`` (:mod:`pvlm.distributed`).

With several processes: the same global batch (``--batch-size`` split over the processes), the same loss
(token and label means over the global batch), rank 0 alone writing checkpoints, history and progress, and
checkpoints in the one-process format; a run resumes with any number of processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from runtime.atomic import write_json

from .attribute_targets import IGNORE
from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from .data import Augment, CaptionDataset, collate, data_hash, load_jsonl
from .distributed import (Dist, GlobalBatchSampler, ShardSampler, all_sum, check_batch, from_env, launch_local,
                          local_device, process_group, sync_buffers)
from .feature_cache import CachedFeatures, FrozenPrefix
from .model import PersonVLM, PersonVLMConfig, lm_loss
from .outdir import removed_if_unused
from .train_step import TrainStep, local_tokens
from .vocab import Vocabulary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``pvlm-train`` (see its ``--help``)."""

    train: str
    out: str = "runs/train"
    val: str | None = None
    image_root: str | None = None
    preset: str = "small"
    image_size: tuple[int, int] | None = None
    epochs: int = 10
    batch_size: int = 32
    accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    freeze_ratio: float | None = None  # None: the preset's
    # unfrozen backbone layers learn at lr * this; below 1 keeps a pretrained start closer to its weights, but
    # on the quickstart 0.1 cost 2-14 points on every attribute but view against 1.0 (docs/notes/issue-13.md)
    backbone_lr_scale: float = 1.0
    attribute_weight: float = 0.5  # weight of the attribute heads' loss beside the caption loss (configs with heads)
    augment: bool = True
    threads: int | None = None  # torch intra-op threads; fix it for run-to-run identical metrics
    cache_copies: int = 0  # >0: frozen backbone blocks run once per image and augmentation copy (feature_cache)
    min_freq: int = 2
    max_vocab: int = 5000
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    resume: str | None = None
    num_workers: int = 0
    max_steps: int | None = None
    progress: bool = True


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: no Apple MPS device is available")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device must be auto, cpu, cuda or mps, got {name!r}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def unigram_loss(train_ids: list[list[int]], val_ids: list[list[int]], vocab_size: int) -> float:
    """Cross-entropy of a (add-one smoothed) unigram model of the targets: the no-image, no-context baseline."""
    counts = np.ones(vocab_size)
    for seq in train_ids:
        np.add.at(counts, seq[1:], 1)
    logp = np.log(counts / counts.sum())
    targets = np.concatenate([np.asarray(s[1:]) for s in val_ids])
    return float(-logp[targets].mean())


@torch.no_grad()
def evaluate_loss(model: PersonVLM, loader: torch.utils.data.DataLoader, device: torch.device,
                  encode: Any = None, dist: Dist | None = None) -> float:
    """Mean caption-token cross-entropy (no label smoothing) over a loader.

    ``encode(inputs)`` gives the visual tokens; it defaults to ``model.encode_image``. With ``dist`` each
    process holds a shard of the loader and the sums are added over processes.
    """
    model.eval()
    encode = encode if encode is not None else model.encode_image
    total, n = 0.0, 0
    for inputs, ids, _ in loader:
        ids = ids.to(device)
        logits = model.decode_visual(ids, encode(inputs.to(device)))
        tokens = int((ids[:, 1:] != model.cfg.pad_id).sum())
        total += float(lm_loss(logits, ids, model.cfg.pad_id)) * tokens
        n += tokens
    model.train()
    if dist is not None and dist.active:
        sums = all_sum(torch.tensor([total, n], dtype=torch.float64, device=device), dist)
        total, n = float(sums[0]), int(sums[1])
    return total / max(1, n)


def param_groups(model: PersonVLM, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups: trainable backbone tensors at ``lr * backbone_lr_scale``, the rest at ``lr``; no decay on 1-D."""
    backbone = {id(p) for p in model.vision.backbone.parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in backbone, p.dim() >= 2), []).append(p)
    return [{"params": ps, "lr": lr * (backbone_lr_scale if in_bb else 1.0),
             "weight_decay": weight_decay if decay else 0.0, "name": ("backbone" if in_bb else "head") + ("" if decay else "-nodecay")}
            for (in_bb, decay), ps in sorted(groups.items())]


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train a model; writes ``best.pt``, ``last.pt`` and ``history.json`` under ``cfg.out``. Returns the summary.

    A run that fails or is interrupted before writing anything removes the output directories it created.
    Under torchrun (``RANK``/``WORLD_SIZE`` set) this process is one rank of a DistributedDataParallel run.
    """
    dist = from_env()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # float sums are ordered by thread count: same threads, same metrics
    pvlm_log = logging.getLogger("pvlm")
    level = pvlm_log.level
    if not dist.main:
        pvlm_log.setLevel(logging.ERROR)  # rank 0 reports; the others would repeat its warnings
    try:
        device = local_device(dist, pick_device(cfg.device))
        with process_group(dist, device), removed_if_unused(cfg.out) if dist.main else contextlib.nullcontext():
            return _train(cfg, dist, device)
    finally:
        torch.set_num_threads(threads)
        pvlm_log.setLevel(level)


def _train(cfg: TrainConfig, dist: Dist, device: torch.device) -> dict[str, Any]:
    """The run itself, step by step; every step draws from the seeded RNGs in the same order as before."""
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
    train_records, val_records = _split_records(cfg)
    if dist.active:
        check_batch(cfg.batch_size, dist.world, len(train_records))
    resume = _read_resume(cfg)
    model, vocab = _build_model(cfg, train_records, resume, device)
    data = _data(cfg, model, vocab, train_records, val_records, device, dist)
    step = _step(cfg, model, data, device, dist)
    optim = _optimisation(cfg, model, len(data.train_dl), device)
    state = _initial_state(resume, optim, data.generator)
    baseline, meta_base = _run_metadata(cfg, model, vocab, train_records, data, dist)
    t0 = time.time()
    for epoch in range(state.start_epoch, cfg.epochs):
        if cfg.max_steps is not None and state.step >= cfg.max_steps:
            break
        running = _train_epoch(cfg, epoch, step, data, optim, state, device, dist)
        sync_buffers(model, dist)
        val_loss = evaluate_loss(model, data.val_dl, device, data.encode, dist)
        state.history.append({"epoch": epoch + 1, "step": state.step, "train_loss": running, "val_loss": val_loss,
                              "lr": optim.scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 1)})
        if dist.main:
            log.info("epoch %d: train %.3f val %.3f (unigram %.3f)", epoch + 1, running or float("nan"), val_loss,
                     baseline)
        meta = {**meta_base, "epoch": epoch + 1, "step": state.step, "val_loss": val_loss}
        _save_checkpoints(out, epoch, model, vocab, meta, optim, data.generator, state, baseline, dist)
    return {"best": str(out / "best.pt"), "last": str(out / "last.pt"), "history": str(out / "history.json"),
            "best_val_loss": state.best, "unigram_val_loss": baseline, "epochs": state.history}


def train_processes(cfg: TrainConfig, nproc: int) -> dict[str, Any]:
    """:func:`train` in ``nproc`` processes on this machine (what ``torchrun --nproc-per-node N`` does); the
    summary is rank 0's. The options are checked here first, so a bad one is reported once."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    check_batch(cfg.batch_size, nproc, nproc)
    if cfg.device == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc {nproc} with --device cuda needs {nproc} GPUs; {torch.cuda.device_count()} found")
    for path in (cfg.train, cfg.val, cfg.resume):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
    if cfg.resume:
        _read_resume(cfg)
    else:  # the preset and its overrides, checked without building a model
        PersonVLMConfig.preset(cfg.preset, **({"image_size": tuple(cfg.image_size)} if cfg.image_size else {}),
                               **({"freeze_ratio": cfg.freeze_ratio} if cfg.freeze_ratio is not None else {}))
    return launch_local(_process_main, (cfg, logging.getLogger().level), nproc)


def _process_main(cfg: TrainConfig, level: int) -> dict[str, Any]:
    """One process of :func:`train_processes`: logging as in the parent (:func:`train` quiets ranks other than 0),
    a share of the CPU threads, then :func:`train`."""
    from torch.distributed.elastic.multiprocessing.errors import record

    logging.basicConfig(level=level, format="%(message)s")
    if cfg.threads is None:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    return record(train)(cfg)


def _split_records(cfg: TrainConfig) -> tuple[list[Any], list[Any]]:
    """Training and validation records: ``cfg.val``, or a seeded ``cfg.val_fraction`` held out of ``cfg.train``."""
    train_records = load_jsonl(cfg.train, cfg.image_root)
    if cfg.val:
        val_records = load_jsonl(cfg.val, cfg.image_root)
    else:
        rng = random.Random(cfg.seed)
        shuffled = train_records[:]
        rng.shuffle(shuffled)
        n_val = max(1, int(len(shuffled) * cfg.val_fraction))
        val_records, train_records = shuffled[:n_val], shuffled[n_val:]
    if not train_records or not val_records:
        raise ValueError(f"{cfg.train}: need at least one usable training and one validation image")
    return train_records, val_records


def _read_resume(cfg: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint to resume from (it must hold a training state, as ``last.pt`` does), or None."""
    resume = read_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None and "train_state" not in resume:
        raise CheckpointError(f"{cfg.resume}: has no training state to resume from (use last.pt)")
    return resume


def _build_model(cfg: TrainConfig, train_records: list[Any], resume: dict[str, Any] | None,
                 device: torch.device) -> tuple[PersonVLM, Vocabulary]:
    """Model (on ``device``, train mode) and vocabulary: resumed, or the preset with a vocabulary of the captions."""
    if resume is not None:
        vocab = Vocabulary.from_dict(resume["vocab"])
        model_cfg = PersonVLMConfig.from_dict(resume["config"])
    else:
        vocab = Vocabulary.build((r.caption for r in train_records), cfg.min_freq, cfg.max_vocab)
        overrides: dict[str, Any] = {"vocab_size": len(vocab)}
        if cfg.freeze_ratio is not None:
            overrides["freeze_ratio"] = cfg.freeze_ratio
        if cfg.image_size:
            overrides["image_size"] = tuple(cfg.image_size)
        model_cfg = PersonVLMConfig.preset(cfg.preset, **overrides)
    model = PersonVLM(model_cfg, load_pretrained=resume is None)
    if resume is not None:
        model.load_state_dict(resume["state_dict"], strict=False)
    model.to(device).train()
    return model, vocab


@dataclass(frozen=True)
class _Data:
    """Datasets and loaders of one run; ``encode(inputs)`` gives visual tokens from pixels or cached features."""

    train_ds: Any
    val_ds: Any
    train_dl: torch.utils.data.DataLoader
    val_dl: torch.utils.data.DataLoader
    encode: Any
    generator: torch.Generator  # the training loader's shuffle order; saved in last.pt for an exact resume


def _data(cfg: TrainConfig, model: PersonVLM, vocab: Vocabulary, train_records: list[Any], val_records: list[Any],
          device: torch.device, dist: Dist) -> _Data:
    """Caption datasets (with the frozen-prefix feature cache where asked and usable) and their loaders.

    Under torchrun: this rank's share of every global batch (:class:`GlobalBatchSampler`) and of the validation set.
    """
    model_cfg = model.cfg
    progress = cfg.progress and dist.main
    train_ds = CaptionDataset(train_records, vocab, model_cfg, progress,
                              augment=Augment(seed=cfg.seed) if cfg.augment else None)
    val_ds = CaptionDataset(val_records, vocab, model_cfg, progress)
    train_ds, val_ds, encode = _feature_cache(cfg, model, train_ds, val_ds, device, progress)
    gen = torch.Generator().manual_seed(cfg.seed)
    pad = lambda b: collate(b, model_cfg.pad_id)  # noqa: E731
    if dist.active:
        sampler = GlobalBatchSampler(train_ds, cfg.batch_size, dist, cfg.seed)
        train_dl = torch.utils.data.DataLoader(train_ds, sampler.per_rank, sampler=sampler, collate_fn=pad,
                                               num_workers=cfg.num_workers)
        val_dl = torch.utils.data.DataLoader(val_ds, cfg.batch_size, sampler=ShardSampler(len(val_ds), dist),
                                             collate_fn=pad, num_workers=cfg.num_workers)
        return _Data(train_ds, val_ds, train_dl, val_dl, encode, gen)
    train_dl = torch.utils.data.DataLoader(train_ds, cfg.batch_size, shuffle=True, collate_fn=pad,
                                           generator=gen, num_workers=cfg.num_workers, drop_last=len(train_ds) > cfg.batch_size)
    val_dl = torch.utils.data.DataLoader(val_ds, cfg.batch_size, collate_fn=pad, num_workers=cfg.num_workers)
    return _Data(train_ds, val_ds, train_dl, val_dl, encode, gen)


def _step(cfg: TrainConfig, model: PersonVLM, data: _Data, device: torch.device, dist: Dist) -> torch.nn.Module:
    """The loss module a step calls: :class:`TrainStep`, wrapped in DistributedDataParallel under torchrun."""
    step = TrainStep(model, data.encode, cfg.label_smoothing, cfg.attribute_weight)
    if not dist.active:
        return step
    if device.type == "cuda":  # one batch-norm statistic over the global batch (CPU has no SyncBatchNorm)
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    unused = model.attribute_heads is not None and cfg.attribute_weight == 0  # heads present but never called
    return torch.nn.parallel.DistributedDataParallel(
        step, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused)


def _feature_cache(cfg: TrainConfig, model: PersonVLM, train_ds: Any, val_ds: Any,
                   device: torch.device, progress: bool) -> tuple[Any, Any, Any]:
    """``--cache-copies`` on CPU: datasets of frozen-prefix features and the encoder over them; else unchanged."""
    encode: Any = model.encode_image
    if cfg.cache_copies and model.cfg.freeze_ratio > 0 and device.type == "cpu":
        split = FrozenPrefix(model)
        if split.usable():
            train_ds = CachedFeatures(split, train_ds, cfg.cache_copies if cfg.augment else 1, progress=progress)
            val_ds = CachedFeatures(split, val_ds, 1, progress=progress)
            encode = split.visual
        else:
            log.warning("--cache-copies: the backbone has no frozen prefix that can be cached; training without")
    return train_ds, val_ds, encode


def _run_metadata(cfg: TrainConfig, model: PersonVLM, vocab: Vocabulary, train_records: list[Any],
                  data: _Data, dist: Dist) -> tuple[float, dict[str, Any]]:
    """The unigram baseline loss, and the metadata every checkpoint of this run carries."""
    baseline = unigram_loss(data.train_ds.ids, data.val_ds.ids, len(vocab))
    meta_base = {"data_hash": data_hash(train_records), "train_size": len(data.train_ds), "val_size": len(data.val_ds),
                 "unigram_val_loss": baseline, "preset": cfg.preset, "train_config": json.dumps(asdict(cfg)),
                 "processes": dist.world}
    if dist.main:
        split = f"; {dist.world} processes, {cfg.batch_size // dist.world} images each per batch" if dist.active else ""
        log.info("model %s: %d parameters; %d train / %d val images; unigram baseline %.3f%s", cfg.preset,
                 sum(p.numel() for p in model.parameters()), len(data.train_ds), len(data.val_ds), baseline, split)
    return baseline, meta_base


@dataclass(frozen=True)
class _Optimisation:
    """AdamW over the parameter groups, its warmup + cosine schedule, and mixed precision (CUDA only)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool
    amp_dtype: torch.dtype


def _optimisation(cfg: TrainConfig, model: PersonVLM, batches_per_epoch: int, device: torch.device) -> _Optimisation:
    """Optimiser groups (:func:`param_groups`), schedule over the run's optimiser steps, AMP settings."""
    opt = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.weight_decay, cfg.backbone_lr_scale), lr=cfg.lr,
                            betas=(0.9, 0.98))
    steps_per_epoch = max(1, batches_per_epoch // cfg.accum_steps)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, min(cfg.warmup_steps, total_steps // 5 or 1), total_steps, cfg.min_lr_ratio))
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return _Optimisation(opt, sched, scaler, use_amp, amp_dtype)


@dataclass
class _State:
    """What carries from epoch to epoch and into ``last.pt``: first epoch, optimiser steps, best val loss, history."""

    start_epoch: int = 0
    step: int = 0
    best: float = float("inf")
    history: list[dict[str, Any]] = field(default_factory=list)


def _initial_state(resume: dict[str, Any] | None, optim: _Optimisation, gen: torch.Generator) -> _State:
    """A fresh state, or the resumed one (optimiser, schedule and, where saved, the RNGs restored too)."""
    if resume is None:
        return _State()
    st = resume["train_state"]
    optim.optimizer.load_state_dict(st["optimizer"])
    optim.scheduler.load_state_dict(st["scheduler"])
    if "shuffle_rng" in st:  # exact continuation: same batch order and dropout masks as an uninterrupted run
        gen.set_state(st["shuffle_rng"])
        torch.set_rng_state(st["torch_rng"])
    return _State(int(st["epoch"]), int(st["step"]), float(st["best_val_loss"]), json.loads(st["history"]))


def _train_epoch(cfg: TrainConfig, epoch: int, step: torch.nn.Module, data: _Data, optim: _Optimisation,
                 state: _State, device: torch.device, dist: Dist) -> float | None:
    """One pass over the training loader (stopping at ``cfg.max_steps``); returns the smoothed caption loss."""
    opt, sched, scaler = optim.optimizer, optim.scheduler, optim.scaler
    model = step.module.model if dist.active else step.model
    data.train_ds.epoch = epoch  # augmentation draws depend on (seed, epoch, image), not on worker order
    if dist.active:
        data.train_dl.sampler.set_epoch(epoch)
    bar = tqdm(data.train_dl, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and dist.main),
               dynamic_ncols=True)
    running = None
    for i, (inputs, ids, targets) in enumerate(bar):
        ids, targets = ids.to(device), targets.to(device)
        counts = _global_counts(ids, targets, model.cfg.pad_id, device, dist)
        update = (i + 1) % cfg.accum_steps == 0
        with contextlib.nullcontext() if update or not dist.active else step.no_sync():  # sync on the last micro-batch
            with torch.autocast(device.type, dtype=optim.amp_dtype, enabled=optim.use_amp):
                loss, caption, attr = step(inputs.to(device), ids, targets, *counts)
            scaler.scale(loss / cfg.accum_steps).backward()
        if update:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            state.step += 1
        value = _caption_value(caption, ids, model.cfg.pad_id, counts, dist)  # comparable with the validation loss
        running = value if running is None else 0.95 * running + 0.05 * value
        extra = {} if attr is None else {"attr": f"{float(attr.detach()):.3f}"}
        bar.set_postfix(loss=f"{running:.3f}", **extra, lr=f"{sched.get_last_lr()[0]:.2e}")
        if cfg.max_steps is not None and state.step >= cfg.max_steps:
            break
    return running


def _global_counts(ids: torch.Tensor, targets: torch.Tensor, pad_id: int, device: torch.device,
                   dist: Dist) -> tuple[torch.Tensor, int] | tuple[()]:
    """Under torchrun: the global batch's (caption tokens, known labels per head field) and the world size."""
    if not dist.active:
        return ()
    counts = torch.cat([local_tokens(ids, pad_id).view(1), (targets != IGNORE).sum(0)]).to(device, torch.float32)
    return all_sum(counts, dist), dist.world


def _caption_value(caption: torch.Tensor, ids: torch.Tensor, pad_id: int, counts: tuple[Any, ...],
                   dist: Dist) -> float:
    """This batch's caption loss as a float: over the global batch under torchrun."""
    if not counts:
        return float(caption.detach())
    total = all_sum((caption.detach().float() * local_tokens(ids, pad_id)).view(1), dist)
    return float(total[0] / counts[0][0])


def _save_checkpoints(out: Path, epoch: int, model: PersonVLM, vocab: Vocabulary, meta: dict[str, Any],
                      optim: _Optimisation, gen: torch.Generator, state: _State, baseline: float, dist: Dist) -> None:
    """``best.pt`` if the validation loss improved, then ``last.pt`` (with the training state), ``history.json``;
    rank 0 writes, every rank keeps the same best loss."""
    val_loss = meta["val_loss"]
    improved = val_loss < state.best
    if improved:
        state.best = val_loss
    if not dist.main:
        return
    if improved:
        save_checkpoint(out / "best.pt", model, vocab, meta)
    train_state = {"optimizer": optim.optimizer.state_dict(), "scheduler": optim.scheduler.state_dict(),
                   "epoch": epoch + 1, "shuffle_rng": gen.get_state(), "torch_rng": torch.get_rng_state(),
                   "step": state.step, "best_val_loss": state.best, "history": json.dumps(state.history)}
    save_checkpoint(out / "last.pt", model, vocab, meta, train_state=train_state)
    write_json(out / "history.json", {"unigram_val_loss": baseline, "epochs": state.history})


if __name__ == "__main__":  # torchrun --nproc-per-node N -m pvlm.train TRAIN.jsonl [pvlm-train options]
    from pvlm.cli_train import main

    main()
