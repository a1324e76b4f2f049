"""PyTorch references for beam search and seeded sampling on the KV-cached model.

The runtime's loops (``runtime/beam.py``, ``runtime/sampling.py``) must give the same sequences:
beam scores are float64 log-softmax sums, candidates taken in descending score (ties: lowest
beam*vocab+token index); sampling filters temperature, then top-k, then top-p, and draws with one
``numpy.random.default_rng([seed, image, draw]).random()`` per step by inverse CDF.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import PersonVLM


def _banned(seq: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already in ``seq``."""
    if n <= 0 or len(seq) < n - 1:
        return []
    prefix = seq[len(seq) - n + 1:]
    return [seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i:i + n - 1] == prefix]


def _score(logprob: float, length: int, length_penalty: float) -> float:
    return float(logprob / max(length, 1) ** length_penalty)


class _Stepper:
    """One image's rows on the KV-cached model: step the last tokens, reorder rows."""

    def __init__(self, model: PersonVLM, pixels: torch.Tensor, rows: int, max_new_tokens: int):
        ck, cv = model.cross_kv(model.encode_image(pixels[None]))
        self.model, self.ck, self.cv = model, ck.repeat_interleave(rows, 1), cv.repeat_interleave(rows, 1)
        self.k, self.v = model.empty_cache(rows, max_new_tokens, pixels.device, ck.dtype)

    def logits(self, tokens: list[int], t: int) -> torch.Tensor:
        """float64 logits (rows, V) for the rows' last tokens at position ``t``."""
        tok = torch.tensor(tokens, dtype=torch.long)[:, None]
        pos = torch.full_like(tok, t)
        logits, k, v = self.model.decode_step(tok, pos, self.ck, self.cv, self.k, self.v)
        self.k[:, :, :, t], self.v[:, :, :, t] = k[:, :, :, 0], v[:, :, :, 0]
        return logits.double()

    def reorder(self, rows: list[int]) -> None:
        """Row i's cache becomes row ``rows[i]``'s."""
        idx = torch.tensor(rows)
        self.k, self.v = self.k[:, idx], self.v[:, idx]


@torch.no_grad()
def beam_search(model: PersonVLM, pixels: torch.Tensor, beams: int, max_new_tokens: int = 48, n_best: int = 1,
                length_penalty: float = 1.0, no_repeat_ngram_size: int = 0) -> list[list[tuple[list[int], float]]]:
    """Per image of (B, 3, H, W): ``n_best`` (ids without BOS/EOS, score) best first; one image at a time."""
    cfg = model.cfg
    out = []
    for img in pixels:
        run = _Stepper(model, img, beams, max_new_tokens)
        seqs: list[list[int]] = [[] for _ in range(beams)]
        lp = torch.full((beams,), float("-inf"), dtype=torch.float64)
        lp[0] = 0.0
        finished: list[tuple[list[int], float]] = []
        tokens = [cfg.bos_id] * beams
        for t in range(max_new_tokens):
            cand = lp[:, None] + torch.log_softmax(run.logits(tokens, t), -1)
            for j, s in enumerate(seqs):
                cand[j, _banned(s, no_repeat_ngram_size)] = float("-inf")
            flat = cand.flatten()
            new, new_lp, src = [], [], []
            for c in torch.sort(flat, descending=True, stable=True).indices[:2 * beams].tolist():
                j, tok = divmod(c, cand.shape[1])
                if tok == cfg.eos_id:
                    if len(finished) < beams:
                        finished.append((seqs[j], _score(flat[c].item(), len(seqs[j]) + 1, length_penalty)))
                    continue
                new.append(seqs[j] + [tok])
                new_lp.append(flat[c].item())
                src.append(j)
                if len(new) == beams:
                    break
            if len(finished) >= beams or t == max_new_tokens - 1 or len(new) < beams:
                finished += [(s, _score(v, len(s), length_penalty)) for s, v in zip(new, new_lp)]
                finished = finished[:beams]
                break
            seqs, lp, tokens = new, torch.tensor(new_lp, dtype=torch.float64), [s[-1] for s in new]
            run.reorder(src)
        out.append(sorted(finished, key=lambda h: -h[1])[:n_best])
    return out


def _filter(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, banned: list[int]) -> torch.Tensor:
    """float64 logits (V,) with filtered tokens at -inf: temperature, banned, top-k, top-p."""
    x = logits / temperature
    x[banned] = float("-inf")
    if 0 < top_k < x.shape[0]:
        x[x < torch.topk(x, top_k).values[-1]] = float("-inf")
    if top_p < 1.0:
        order = torch.sort(x, descending=True, stable=True).indices
        p = torch.softmax(x[order], -1)
        x[order[(torch.cumsum(p, -1) - p) >= top_p]] = float("-inf")
    return x


@torch.no_grad()
def sample(model: PersonVLM, pixels: torch.Tensor, max_new_tokens: int = 48, n: int = 1, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, seed: int = 0, length_penalty: float = 1.0,
           no_repeat_ngram_size: int = 0, first_index: int = 0) -> list[list[tuple[list[int], float]]]:
    """Per image: ``n`` seeded draws (ids, score) ranked by score; image i uses ``first_index + i`` in its seed."""
    cfg = model.cfg
    out = []
    for i, img in enumerate(pixels):
        run = _Stepper(model, img, 1, max_new_tokens)
        draws = []
        for j in range(n):
            rng = np.random.default_rng([seed, first_index + i, j])
            run.k.zero_(), run.v.zero_()
            seq, lp, tok = [], 0.0, cfg.bos_id
            for t in range(max_new_tokens):
                logits = run.logits([tok], t)[0]
                x = _filter(logits.clone(), temperature, top_k, top_p, _banned(seq, no_repeat_ngram_size))
                cum = np.cumsum(torch.exp(x - x.max()).numpy())
                tok = int(min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), len(cum) - 1))
                lp += torch.log_softmax(logits, -1)[tok].item()
                if tok == cfg.eos_id:
                    draws.append((seq, _score(lp, len(seq) + 1, length_penalty)))
                    break
                seq.append(tok)
            else:
                draws.append((seq, _score(lp, len(seq), length_penalty)))
        out.append(sorted(draws, key=lambda h: -h[1]))
    return out
