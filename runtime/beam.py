"""Beam search over a backend: beams are rows of the batch, the cache is reordered after each step.

Per step the host work is kept small: candidates come from each beam's best ``2k`` tokens (an exact
shortcut, checked every step, with the full sort as fallback), and finished images leave the batch
in groups, so that compacting the cache (a copy of every row's buffers) is paid a few times per batch
rather than once per finished image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .decoding import (
    DecodingOptions,
    Hypothesis,
    banned_tokens,
    log_softmax64,
    sequence_score,
)

#: Finished images stay in the batch (decoded and ignored) until their rows are at least this share of it:
#: compacting copies every remaining row's cache, which costs about as much as a decoder step.
COMPACT_SHARE = 0.25
#: Steps of at most this many logits (rows x vocabulary) rank by the full sort: cheaper there than the shortcut.
SMALL_STEP = 2048


def expand_rows(backend: Any, state: Any, batch: int, width: int) -> None:
    """Repeat every image's row ``width`` times (image g owns rows g*width .. g*width+width-1)."""
    if width > 1:
        backend.keep(state, np.repeat(np.arange(batch), width))


def _select(order: np.ndarray, values: np.ndarray, vocab: int, seqs: list[list[int]], eos: int, k: int,
            finished: list[Hypothesis], opts: DecodingOptions) -> tuple[list[list[int]], list[float], list[int]]:
    """One group's step: the best ``k`` continuations among its ranked candidates; EOS ones finish.

    ``order``: flat candidate indices (beam * vocab + token) in descending score, ties by lowest index
    (at least the best 2k); ``values``: their summed log-probs. Returns the new sequences, their summed
    log-probs and the beam each came from.
    """
    new_seqs: list[list[int]] = []
    new_lp: list[float] = []
    src: list[int] = []
    for c, v in zip(order.tolist(), values.tolist()):  # at most k of them end in EOS
        j, tok = divmod(c, vocab)
        if tok == eos:
            if len(finished) < k:
                finished.append(Hypothesis(list(seqs[j]), sequence_score(v, len(seqs[j]) + 1, opts.length_penalty)))
            continue
        new_seqs.append(seqs[j] + [tok])
        new_lp.append(v)
        src.append(j)
        if len(new_seqs) == k:
            break
    return new_seqs, new_lp, src


def rank(finished: list[Hypothesis], n_best: int) -> list[Hypothesis]:
    """The ``n_best`` highest-scoring hypotheses, best first (ties keep finishing order)."""
    return sorted(finished, key=lambda h: -h.score)[:n_best]


def _ranked_full(logits: np.ndarray, lp: np.ndarray, banned: list[list[int]] | None, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Every group's best 2k candidates by a full sort of its (k * V) summed log-probs (the reference's way)."""
    g = lp.shape[0]
    cand = lp[:, :, None] + log_softmax64(logits).reshape(g, k, -1)  # (G, k, V)
    for r, toks in enumerate(banned or ()):
        if toks:
            cand[r // k, r % k, toks] = -np.inf
    flat = cand.reshape(g, -1)
    order = np.argsort(-flat, axis=1, kind="stable")[:, :2 * k]
    return order, np.take_along_axis(flat, order, 1)


def _ranked(logits: np.ndarray, lp: np.ndarray, banned: list[list[int]] | None, k: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """The same ranking as :func:`_ranked_full` from each beam's best 2k tokens only.

    A group's best 2k candidates are among its beams' best 2k tokens whenever, in every row, the best
    token left out scores strictly below the ones kept (a score is monotone in the logit, so then no
    other candidate of that row can come before them). That is checked; otherwise the full sort runs.
    Scores are computed with the very operations of :func:`runtime.decoding.log_softmax64`, so they are
    bit-identical. Small steps (a few rows of a small vocabulary) take the full sort, which is then cheaper.
    """
    rows, vocab = logits.shape
    m = 2 * k
    if vocab <= m + 1 or rows * vocab <= SMALL_STEP:
        return _ranked_full(logits, lp, banned, k)
    keys = logits.copy()
    for r, toks in enumerate(banned or ()):
        if toks:
            keys[r, toks] = -np.inf
    r = np.arange(rows)
    # the 2k + 1 best tokens of each row, best first (ties: lowest token), by repeated argmax: for a handful of
    # tokens that is several times faster than np.argpartition over a row
    top = np.empty((rows, m + 1), np.int64)
    best = np.empty((rows, m + 1), np.float32)
    for i in range(m + 1):
        top[:, i] = a = keys.argmax(1)
        best[:, i] = keys[r, a]
        keys[r, a] = -np.inf
    if np.any(best == -np.inf):  # banned tokens among them (or duplicates): not worth a shortcut
        return _ranked_full(logits, lp, banned, k)
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    lse = np.log(np.exp(x).sum(-1, keepdims=True))  # (R, 1)
    cand = lp.reshape(rows, 1) + (np.take_along_axis(x, top, 1) - lse)
    guard, kept = cand[:, m], cand[:, :m]  # the guard: the best token left out
    # a row whose guard is -inf (a beam not started yet) left out only -inf candidates, which matter only if a
    # group's best 2k reach them (checked below)
    if not np.all((guard < kept.min(1)) | (guard == -np.inf)):
        return _ranked_full(logits, lp, banned, k)
    idx = (top[:, :m] + (r % k * vocab)[:, None]).reshape(-1, k * m)  # flat beam * V + token, per group
    val = kept.reshape(-1, k * m)
    order = np.lexsort((idx, -val), axis=1)[:, :m]
    val = np.take_along_axis(val, order, 1)
    if np.any(val[:, -1] == -np.inf):
        return _ranked_full(logits, lp, banned, k)
    return np.take_along_axis(idx, order, 1), val


@dataclass
class _Batch:
    """The rows in the backend's batch: which group each block of ``k`` rows belongs to (-1: finished)."""

    owner: list[int]

    def rows_of(self, live: list[int], k: int) -> np.ndarray:
        """Row indices of the blocks of ``live`` groups, in block order."""
        pos = {g: i for i, g in enumerate(self.owner)}
        return np.concatenate([np.arange(pos[g] * k, pos[g] * k + k) for g in live])


def beam_search(backend: Any, pixels: np.ndarray, bos: int, eos: int, max_new_tokens: int,
                opts: DecodingOptions) -> tuple[list[list[Hypothesis]], dict[str, float]]:
    """Beam search on float32 (B, 3, H, W): ``opts.n_best`` hypotheses per image, best first.

    An image is done once it has ``beams`` finished hypotheses (or at ``max_new_tokens``, where its
    live beams count as finished); its rows leave the batch once finished rows make up
    ``COMPACT_SHARE`` of it. Timings in ms; ``reorder_ms`` is the time spent moving cache rows between
    beams and dropping finished ones.
    """
    b, k, n = pixels.shape[0], opts.beams, opts.no_repeat_ngram_size
    t0 = time.perf_counter()
    state = backend.encode(pixels, max_new_tokens)
    expand_rows(backend, state, b, k)
    t1 = time.perf_counter()
    batch = _Batch(list(range(b)))  # group of each block of k rows
    groups = list(range(b))  # live groups, in block order
    seqs = [[[] for _ in range(k)] for _ in range(b)]
    lp = np.full((b, k), -np.inf)
    lp[:, 0] = 0.0  # step 0: the k rows are identical, only beam 0 may start
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    tokens = np.full((b * k, 1), bos, np.int64)
    steps, reorder_s = 0, 0.0
    for pos in range(max_new_tokens):
        logits = backend.step_logits(state, tokens, pos)
        steps += 1
        live_rows = batch.rows_of(groups, k) if len(groups) < len(batch.owner) else None
        if live_rows is not None:
            logits = logits[live_rows]
        banned = [list(banned_tokens(s, n)) for g in groups for s in seqs[g]] if n else None
        order, values = _ranked(logits, lp[groups], banned, k)
        still, src_rows, nxt = [], [], []
        for gi, g in enumerate(groups):
            new_seqs, new_lp, src = _select(order[gi], values[gi], logits.shape[1], seqs[g], eos, k, finished[g],
                                            opts)
            if len(finished[g]) >= k or pos == max_new_tokens - 1 or len(new_seqs) < k:
                for s, v in zip(new_seqs, new_lp):
                    if len(finished[g]) < k:
                        finished[g].append(Hypothesis(s, sequence_score(v, len(s), opts.length_penalty)))
                continue
            seqs[g], lp[g] = new_seqs, new_lp
            still.append(g)
            src_rows.append([gi * k + j for j in src])
            nxt += [s[-1] for s in new_seqs]
        if not still:
            break
        r0 = time.perf_counter()
        tokens = _move_rows(backend, state, batch, still, src_rows, live_rows, nxt, pos + 1, k, eos)
        reorder_s += time.perf_counter() - r0
        groups = still
    t2 = time.perf_counter()
    return [rank(f, opts.n_best) for f in finished], {
        "encode_ms": (t1 - t0) * 1e3, "decode_ms": (t2 - t1) * 1e3, "steps": steps, "reorder_ms": reorder_s * 1e3}


def _move_rows(backend: Any, state: Any, batch: _Batch, still: list[int],
               src_rows: list[list[int]], live_rows: np.ndarray | None, nxt: list[int], length: int, k: int,
               eos: int) -> np.ndarray:
    """Give every surviving beam its source's cache (``reorder``), dropping finished groups' rows (``keep``)
    once they are ``COMPACT_SHARE`` of the batch; returns the next step's tokens for the backend's rows.

    ``src_rows``: per surviving group, its new beams' sources as indices into this step's live rows
    (``live_rows`` maps those to the backend's rows; None: every row is live).
    """
    flat_src = np.asarray([r for block in src_rows for r in block])
    src = flat_src if live_rows is None else live_rows[flat_src]
    dead = len(batch.owner) - len(still)
    if dead and dead >= COMPACT_SHARE * len(batch.owner):  # compact: survivors only, in their new order
        backend.keep(state, src)
        batch.owner = list(still)
        return np.asarray(nxt, np.int64).reshape(-1, 1)
    pos = {g: i for i, g in enumerate(batch.owner)}
    rows = np.arange(len(batch.owner) * k)
    blocks = np.concatenate([np.arange(pos[g] * k, pos[g] * k + k) for g in still])
    rows[blocks] = src  # finished groups' rows stay where they are, untouched
    if not np.array_equal(rows, np.arange(len(rows))):
        backend.reorder(state, rows, length)
    for g in set(batch.owner) - set(still):
        batch.owner[pos[g]] = -1
    tokens = np.full((len(rows), 1), eos, np.int64)  # finished rows decode EOS; their logits are ignored
    tokens[blocks, 0] = nxt
    return tokens
