"""Seeded sampling over a backend: temperature, then top-k, then top-p, from float64 softmax."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .beam import expand_rows, rank
from .decoding import (DecodingOptions, Hypothesis, banned_tokens, drop_finished, log_softmax64,
                       sequence_score)


def row_rng(seed: int, image: int, draw: int) -> np.random.Generator:
    """The generator for draw ``draw`` of image ``image`` (its index within the call)."""
    return np.random.default_rng([seed, image, draw])


def filter_logits(logits: np.ndarray, temperature: float, top_k: int, top_p: float,
                  banned: set[int] | frozenset[int] = frozenset()) -> np.ndarray:
    """One row (V,) -> float64 logits with filtered tokens at -inf: /temperature, banned, top-k, then top-p.

    top-p keeps the most probable tokens while the mass before each is below ``top_p`` (always the first).
    """
    x = logits.astype(np.float64) / temperature
    if banned:
        x[list(banned)] = -np.inf
    if 0 < top_k < x.shape[0]:
        x[x < np.sort(x)[-top_k]] = -np.inf
    if top_p < 1.0:
        order = np.argsort(-x, kind="stable")
        p = np.exp(x[order] - x[order[0]])
        p /= p.sum()
        x[order[(np.cumsum(p) - p) >= top_p]] = -np.inf
    return x


def draw(x: np.ndarray, rng: np.random.Generator) -> int:
    """Sample an index from float64 logits by inverse CDF with one ``rng.random()``."""
    p = np.exp(x - x.max())
    cum = np.cumsum(p)
    return int(min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), x.shape[0] - 1))


def sample_decode(backend: Any, pixels: np.ndarray, bos: int, eos: int, max_new_tokens: int,
                  opts: DecodingOptions, image_index: list[int] | None = None
                  ) -> tuple[list[list[Hypothesis]], dict[str, float]]:
    """``opts.n_best`` seeded draws per image of float32 (B, 3, H, W), ranked by score.

    Row ``i`` of the batch is image ``image_index[i]`` of the call (default ``i``; its generators' seed). Finished
    rows leave the batch. Scores use the model's unfiltered log-probs.
    """
    b, n = pixels.shape[0], opts.n_best
    t0 = time.perf_counter()
    state = backend.encode(pixels, max_new_tokens)
    expand_rows(backend, state, b, n)
    t1 = time.perf_counter()
    index = list(range(b)) if image_index is None else image_index
    rngs = [row_rng(opts.seed, index[i], j) for i in range(b) for j in range(n)]
    rows = np.arange(b * n)
    out: list[list[int]] = [[] for _ in range(b * n)]
    lps = np.zeros(b * n)
    done: list[Hypothesis | None] = [None] * (b * n)
    tokens = np.full((b * n, 1), bos, np.int64)
    steps = 0
    for pos in range(max_new_tokens):
        logits = backend.step_logits(state, tokens, pos)
        logp = log_softmax64(logits)
        steps += 1
        ids = np.empty(len(rows), np.int64)
        for i, r in enumerate(rows):
            x = filter_logits(logits[i], opts.temperature, opts.top_k, opts.top_p,
                              banned_tokens(out[r], opts.no_repeat_ngram_size))
            ids[i] = draw(x, rngs[r])
            lps[r] += logp[i, ids[i]]
        finished = ids == eos
        for r, t, f in zip(rows, ids.tolist(), finished):
            if f:
                done[r] = Hypothesis(out[r], sequence_score(lps[r], len(out[r]) + 1, opts.length_penalty))
            else:
                out[r].append(t)
        if finished.all():
            break
        rows, ids = drop_finished(backend, state, finished, rows, ids)
        tokens = ids.reshape(-1, 1)
    hyps = [h or Hypothesis(out[r], sequence_score(lps[r], len(out[r]), opts.length_penalty))
            for r, h in enumerate(done)]
    return [rank(hyps[i * n:(i + 1) * n], n) for i in range(b)], {
        "encode_ms": (t1 - t0) * 1e3, "decode_ms": (time.perf_counter() - t1) * 1e3, "steps": steps}
