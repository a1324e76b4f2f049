"""Beam search over a backend: beams are rows of the batch, the cache is reordered after each step."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .decoding import DecodingOptions, Hypothesis, banned_tokens, log_softmax64, sequence_score


def expand_rows(backend: Any, state: Any, batch: int, width: int) -> None:
    """Repeat every image's row ``width`` times (image g owns rows g*width .. g*width+width-1)."""
    if width > 1:
        backend.keep(state, np.repeat(np.arange(batch), width))


def _select(flat: np.ndarray, order: np.ndarray, vocab: int, seqs: list[list[int]], eos: int, k: int,
            finished: list[Hypothesis], opts: DecodingOptions) -> tuple[list[list[int]], list[float], list[int]]:
    """One group's step: the best ``k`` continuations of its (k * V,) candidate scores; EOS ones finish.

    ``order``: the best 2k candidates in descending score, ties by lowest (beam, token) index; returns
    the new sequences, their summed log-probs and the beam each came from.
    """
    new_seqs: list[list[int]] = []
    new_lp: list[float] = []
    src: list[int] = []
    for c in order:  # at most k of them end in EOS
        j, tok = divmod(int(c), vocab)
        if tok == eos:
            if len(finished) < k:
                finished.append(Hypothesis(list(seqs[j]), sequence_score(flat[c], len(seqs[j]) + 1,
                                                                          opts.length_penalty)))
            continue
        new_seqs.append(seqs[j] + [tok])
        new_lp.append(float(flat[c]))
        src.append(j)
        if len(new_seqs) == k:
            break
    return new_seqs, new_lp, src


def rank(finished: list[Hypothesis], n_best: int) -> list[Hypothesis]:
    """The ``n_best`` highest-scoring hypotheses, best first (ties keep finishing order)."""
    return sorted(finished, key=lambda h: -h.score)[:n_best]


def beam_search(backend: Any, pixels: np.ndarray, bos: int, eos: int, max_new_tokens: int,
                opts: DecodingOptions) -> tuple[list[list[Hypothesis]], dict[str, float]]:
    """Beam search on float32 (B, 3, H, W): ``opts.n_best`` hypotheses per image, best first.

    An image is done once it has ``beams`` finished hypotheses (or at ``max_new_tokens``, where its
    live beams count as finished); its rows then leave the batch. Timings in ms; ``reorder_ms`` is the
    time spent moving cache rows between beams.
    """
    b, k, n = pixels.shape[0], opts.beams, opts.no_repeat_ngram_size
    t0 = time.perf_counter()
    state = backend.encode(pixels, max_new_tokens)
    expand_rows(backend, state, b, k)
    t1 = time.perf_counter()
    groups = list(range(b))
    seqs = [[[] for _ in range(k)] for _ in range(b)]
    lp = np.full((b, k), -np.inf)
    lp[:, 0] = 0.0  # step 0: the k rows are identical, only beam 0 may start
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    tokens = np.full((b * k, 1), bos, np.int64)
    steps, reorder_s = 0, 0.0
    for pos in range(max_new_tokens):
        logp = log_softmax64(backend.step_logits(state, tokens, pos))
        steps += 1
        vocab = logp.shape[1]
        cand = lp[groups][:, :, None] + logp.reshape(len(groups), k, vocab)  # (G, k, V)
        for gi, g in enumerate(groups):
            for j, s in enumerate(seqs[g]):
                cand[gi, j, list(banned_tokens(s, n))] = -np.inf
        flat = cand.reshape(len(groups), k * vocab)
        order = np.argsort(-flat, axis=1, kind="stable")[:, :2 * k]  # one sort for every group
        still, rows, nxt = [], [], []
        for gi, g in enumerate(groups):
            new_seqs, new_lp, src = _select(flat[gi], order[gi], vocab, seqs[g], eos, k, finished[g], opts)
            if len(finished[g]) >= k or pos == max_new_tokens - 1 or len(new_seqs) < k:
                for s, v in zip(new_seqs, new_lp):
                    if len(finished[g]) < k:
                        finished[g].append(Hypothesis(s, sequence_score(v, len(s), opts.length_penalty)))
                continue
            seqs[g], lp[g] = new_seqs, new_lp
            still.append(g)
            rows += [gi * k + j for j in src]
            nxt += [s[-1] for s in new_seqs]
        if not still:
            break
        r0 = time.perf_counter()
        rows_arr = np.asarray(rows)
        if len(still) < len(groups):
            backend.keep(state, rows_arr)
        elif not np.array_equal(rows_arr, np.arange(len(rows_arr))):
            backend.reorder(state, rows_arr, pos + 1)
        reorder_s += time.perf_counter() - r0
        groups, tokens = still, np.asarray(nxt, np.int64).reshape(-1, 1)
    t2 = time.perf_counter()
    return [rank(f, opts.n_best) for f in finished], {
        "encode_ms": (t1 - t0) * 1e3, "decode_ms": (t2 - t1) * 1e3, "steps": steps, "reorder_ms": reorder_s * 1e3}
