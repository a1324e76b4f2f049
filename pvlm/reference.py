"""PyTorch reference generators: greedy with a KV cache, and the naive re-run-the-prefix loop.

Both give identical tokens; they are the ground truth every exported backend is compared with.
:func:`decode_like_original` repeats the original repository's per-step work, for benchmarks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .model import PersonVLM


@torch.no_grad()
def generate(
    model: PersonVLM, pixels: torch.Tensor, max_new_tokens: int = 48, use_cache: bool = True, stop_at_eos: bool = True
) -> torch.Tensor:
    """Greedy decoding. Returns ids (B, T<=max_new_tokens) after ``<bos>``, ``<pad>`` after each row's ``<eos>``.

    ``stop_at_eos=False`` decodes exactly ``max_new_tokens`` per row (fixed work, for benchmarks).
    """
    return decode_greedy(model, *model.cross_kv(model.encode_image(pixels)), max_new_tokens, use_cache, stop_at_eos)


@torch.no_grad()
def decode_greedy(
    model: PersonVLM, cross_k: torch.Tensor, cross_v: torch.Tensor, max_new_tokens: int = 48, use_cache: bool = True,
    stop_at_eos: bool = True,
) -> torch.Tensor:
    """The decoding half of :func:`generate`, from precomputed cross-attention K/V (L, B, H, N, Dh)."""
    cfg = model.cfg
    b, dev = cross_k.shape[1], cross_k.device
    seq, done = _start(cfg, max_new_tokens, b, dev)
    if use_cache:
        cache_k, cache_v = model.empty_cache(b, max_new_tokens, dev, cross_k.dtype)
    for t in range(max_new_tokens):
        if use_cache:
            pos = torch.full((b, 1), t, dtype=torch.long, device=dev)
            logits, k, v = model.decode_step(seq[:, -1:], pos, cross_k, cross_v, cache_k, cache_v)
            cache_k[:, :, :, t] = k[:, :, :, 0]
            cache_v[:, :, :, t] = v[:, :, :, 0]
        else:
            logits = model.decode_full(seq, cross_k, cross_v)[:, -1]
        seq = _append(seq, logits.argmax(-1), done, cfg, stop_at_eos)
        if stop_at_eos and bool(done.all()):
            break
    return seq[:, 1:]


def _start(cfg: Any, max_new_tokens: int, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``max_new_tokens``; the ``<bos>`` column and the per-row finished flags."""
    if max_new_tokens < 1 or max_new_tokens > cfg.max_len:
        raise ValueError(f"max_new_tokens must be in [1, {cfg.max_len}], got {max_new_tokens}")
    return (torch.full((batch, 1), cfg.bos_id, dtype=torch.long, device=device),
            torch.zeros(batch, dtype=torch.bool, device=device))


def _append(seq: torch.Tensor, nxt: torch.Tensor, done: torch.Tensor, cfg: Any, stop_at_eos: bool) -> torch.Tensor:
    """Append this step's ids; after a row's ``<eos>`` it gets ``<pad>`` (``done`` updated in place)."""
    if stop_at_eos:
        nxt = nxt.masked_fill(done, cfg.pad_id)
        done |= nxt == cfg.eos_id
    return torch.cat([seq, nxt[:, None]], dim=1)


# TextDecoder.generate's defaults in the original repository.
ORIGINAL_TEMPERATURE, ORIGINAL_TOP_K, ORIGINAL_TOP_P = 0.7, 50, 0.9


@torch.no_grad()
def decode_like_original(model: PersonVLM, visual: torch.Tensor, max_new_tokens: int = 48,
                         stop_at_eos: bool = True) -> torch.Tensor:
    """The original repository's generate loop, from visual tokens (B, N, D); ids like :func:`decode_greedy`.

    Each step does what the original's does: the whole decoder over the whole prefix, the
    cross-attention K/V projected again from the visual tokens, then temperature, top-k and
    top-p filtering. Where the original samples, this takes the most probable token (never
    filtered out), so the output equals greedy decoding and every backend's tokens compare.
    """
    cfg = model.cfg
    seq, done = _start(cfg, max_new_tokens, visual.shape[0], visual.device)
    for _ in range(max_new_tokens):
        logits = model.decode_full(seq, *model.cross_kv(visual))[:, -1] / ORIGINAL_TEMPERATURE
        kth = torch.topk(logits, min(ORIGINAL_TOP_K, logits.shape[-1]))[0][:, -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
        sorted_logits, order = torch.sort(logits, descending=True)
        remove = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1) > ORIGINAL_TOP_P
        remove[:, 1:] = remove[:, :-1].clone()
        remove[:, 0] = False
        probs = F.softmax(logits.masked_fill(remove.scatter(1, order, remove), float("-inf")), dim=-1)
        seq = _append(seq, probs.argmax(-1), done, cfg, stop_at_eos)
        if stop_at_eos and bool(done.all()):
            break
    return seq[:, 1:]


def trim(ids: torch.Tensor | list[int], eos_id: int = 2) -> list[int]:
    """One row of generated ids up to (excluding) the first ``<eos>``."""
    out = []
    for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
        if i == eos_id:
            break
        out.append(int(i))
    return out
