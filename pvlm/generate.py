"""PyTorch reference generators: greedy with a KV cache, and the naive re-run-the-prefix loop.

Both give identical tokens; they are the ground truth every exported backend is compared with.
"""

from __future__ import annotations

import torch

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
    if max_new_tokens < 1 or max_new_tokens > cfg.max_len:
        raise ValueError(f"max_new_tokens must be in [1, {cfg.max_len}], got {max_new_tokens}")
    b, dev = cross_k.shape[1], cross_k.device
    seq = torch.full((b, 1), cfg.bos_id, dtype=torch.long, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
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
        nxt = logits.argmax(-1)
        if stop_at_eos:
            nxt = nxt.masked_fill(done, cfg.pad_id)
            done |= nxt == cfg.eos_id
        seq = torch.cat([seq, nxt[:, None]], dim=1)
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
