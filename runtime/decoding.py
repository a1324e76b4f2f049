"""Decoding options (greedy, beam search, sampling, n-best) and the per-sequence result they produce."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: Recommended repetition guard, measured on reference captions (docs/decoding.md): 10-grams never repeat in 5000
#: synthetic captions and repeat in 1 of 3190 MSP60k captions; 4-grams already repeat in 524 of them. On the trained
#: quickstart model's 300 held-out crops it changes no description (greedy, beams 3, sampling); 3 changes 10-25.
RECOMMENDED_NO_REPEAT_NGRAM = 10
#: Sampling as the original repository's ``PersonVLM.generate`` does by default (models/person_vlm.py there):
#: temperature 0.7, then top-k 50, then top-p 0.9. ``DecodingOptions.parse("original")`` gives it.
ORIGINAL_SAMPLING: dict[str, Any] = {"sample": True, "temperature": 0.7, "top_k": 50, "top_p": 0.9}
#: On by default: a looping sequence ends (greedy) or avoids the repeat (beams, sampling); normal descriptions keep.
#: ``Describer.generate_ids`` (benchmarks, the export's parity check) runs without it.
DEFAULT_NO_REPEAT_NGRAM = RECOMMENDED_NO_REPEAT_NGRAM


@dataclass(frozen=True)
class DecodingOptions:
    """How to pick tokens: greedy (default), beam search (``beams`` > 1) or sampling (``sample=True``).

    ``n_best``: sequences returned per image, ranked by score (<= ``beams`` for beam search; independent
    draws for sampling). ``length_penalty``: score = sum of log-probs / length ** length_penalty.
    ``temperature``, ``top_k`` (0: off), ``top_p`` (1.0: off), ``seed``: sampling only; row ``j`` of image ``i``
    (its index within the call) draws from ``numpy.random.default_rng([seed, i, j])``, so text does not
    depend on batching. ``no_repeat_ngram_size`` (0: off): greedy ends a row instead of repeating an n-gram;
    beam search and sampling never pick a token that repeats one. ``max_new_tokens``: None = the Describer's.
    """

    beams: int = 1
    n_best: int = 1
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = DEFAULT_NO_REPEAT_NGRAM
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        problems = [msg for bad, msg in (
            (not _is_int(self.beams) or self.beams < 1, f"beams must be an integer >= 1, got {self.beams!r}"),
            (not _is_int(self.n_best) or self.n_best < 1, f"n_best must be an integer >= 1, got {self.n_best!r}"),
            (self.sample and self.beams > 1, "sampling and beam search do not combine: use beams=1 with sample"),
            (not self.temperature > 0, f"temperature must be > 0, got {self.temperature!r}"),
            (not _is_int(self.top_k) or self.top_k < 0, f"top_k must be an integer >= 0, got {self.top_k!r}"),
            (not 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}"),
            (not _is_int(self.seed) or self.seed < 0, f"seed must be an integer >= 0, got {self.seed!r}"),
            (not np.isfinite(self.length_penalty), f"length_penalty must be finite, got {self.length_penalty!r}"),
            (not _is_int(self.no_repeat_ngram_size) or self.no_repeat_ngram_size < 0,
             f"no_repeat_ngram_size must be an integer >= 0, got {self.no_repeat_ngram_size!r}"),
            (self.max_new_tokens is not None and (not _is_int(self.max_new_tokens) or self.max_new_tokens < 1),
             f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}"),
        ) if bad]
        if not problems and self.mode == "beam" and self.n_best > self.beams:
            problems.append(f"n_best ({self.n_best}) cannot exceed beams ({self.beams})")
        if not problems and self.mode == "greedy" and self.n_best > 1:
            problems.append("n_best > 1 needs beams >= n_best or sample")
        if problems:
            raise ValueError(problems[0])

    @property
    def mode(self) -> str:
        """``greedy``, ``beam`` or ``sample``."""
        return "sample" if self.sample else "beam" if self.beams > 1 else "greedy"

    @property
    def label(self) -> str:
        """Short name for reports: ``greedy``, ``beams3``, ``sample``, ``original`` (sampling at
        :data:`ORIGINAL_SAMPLING`)."""
        if self.mode == "sample" and all(getattr(self, k) == v for k, v in ORIGINAL_SAMPLING.items()):
            return "original"
        return {"greedy": "greedy", "beam": f"beams{self.beams}", "sample": "sample"}[self.mode]

    @classmethod
    def parse(cls, label: str, **fields: Any) -> DecodingOptions:
        """``greedy`` | ``beamsN`` | ``sample`` | ``original`` (as in ``pvlm-bench --decoding``) -> options;
        ``fields`` override."""
        m = re.fullmatch(r"greedy|sample|original|beams(\d+)", label)
        if not m:
            raise ValueError(f"decoding must be greedy, sample, original or beamsN (e.g. beams3), got {label!r}")
        base = ({"beams": int(m.group(1))} if m.group(1) else dict(ORIGINAL_SAMPLING) if label == "original"
                else {"sample": label == "sample"})
        return cls(**{**base, **fields})

    def with_(self, **changes: Any) -> DecodingOptions:
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass(frozen=True)
class Hypothesis:
    """One decoded sequence: ids (no BOS/EOS) and its score (length-normalised log-prob; None for greedy)."""

    tokens: list[int]
    score: float | None = None


def banned_tokens(seq: list[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already in ``seq`` (``n`` <= 0: none)."""
    if n <= 0 or len(seq) < n - 1:
        return set()
    prefix = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
    return {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == prefix}


def cut_at_repeat(ids: list[int], n: int) -> list[int]:
    """What greedy decoding with ``no_repeat_ngram_size=n`` keeps of an unguarded greedy sequence: the ids before
    the first one that would repeat an n-gram (the guard ends the row there; ``n`` <= 0: all of them)."""
    for j in range(len(ids)):
        if ids[j] in banned_tokens(ids[:j], n):
            return list(ids[:j])
    return list(ids)


def log_softmax64(logits: np.ndarray) -> np.ndarray:
    """float64 log-softmax over the last axis of (B, V) float32 logits."""
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def drop_finished(backend: Any, state: Any, finished: np.ndarray, rows: np.ndarray,
                  ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The active rows and ids left after a step whose rows ``finished`` (bool per active row); the backend's
    per-row state is compacted to them, so finished rows stop costing decoder work."""
    if not finished.any():
        return rows, ids
    alive = np.flatnonzero(~finished)
    backend.keep(state, alive)
    return rows[alive], ids[alive]


def sequence_score(logprob: float, length: int, length_penalty: float) -> float:
    """Sum of log-probs / length ** length_penalty (length counts the EOS when there is one)."""
    return float(logprob / max(length, 1) ** length_penalty)


#: Per-request decoding parameters the servers accept (``pvlm-serve``, the Triton describer): the option fields, and
#: ``decoding`` for a label of :meth:`DecodingOptions.parse` (``beams3``, ``original``) that the fields then refine.
REQUEST_PARAMETERS = ("decoding", "beams", "n_best", "sample", "temperature", "top_k", "top_p", "seed",
                      "length_penalty", "no_repeat_ngram_size")
_PARAMETER_TYPES = {"beams": int, "n_best": int, "sample": bool, "temperature": float, "top_k": int, "top_p": float,
                    "seed": int, "length_penalty": float, "no_repeat_ngram_size": int}


def _parameter(key: str, value: Any) -> Any:
    """One request parameter (a number, bool, or its string form) as the option's type; ValueError otherwise."""
    kind = _PARAMETER_TYPES[key]
    if isinstance(value, str):
        text = value.strip().lower()
        if kind is bool:
            if text not in ("true", "false", "1", "0"):
                raise ValueError(f"parameter {key}: expected true or false, got {value!r}")
            return text in ("true", "1")
        try:
            value = float(text) if kind is float else int(text)
        except ValueError:
            raise ValueError(f"parameter {key}: expected {kind.__name__}, got {value!r}") from None
    if kind is bool:
        if not isinstance(value, (bool, int, np.integer)) or value not in (0, 1):
            raise ValueError(f"parameter {key}: expected true or false, got {value!r}")
        return bool(value)
    if kind is int and (isinstance(value, bool) or not float(value).is_integer()):
        raise ValueError(f"parameter {key}: expected an integer, got {value!r}")
    return kind(value)


#: The widest a request may ask for (``beams``, ``n_best``): every image of a batch costs that many decoder rows.
MAX_REQUEST_WIDTH = 16


def decoding_from_parameters(parameters: Any, base: DecodingOptions | None = None,
                             max_width: int = MAX_REQUEST_WIDTH) -> DecodingOptions:
    """A request's decoding from its parameters (a mapping; other keys ignored), on top of ``base`` (the server's).

    ``decoding`` (a label such as ``beams3`` or ``original``) sets the mode first; the option fields then
    override. No decoding parameter: ``base`` itself. A bad value, or ``beams``/``n_best`` above ``max_width``:
    ValueError with one line naming it.
    """
    base = base or DecodingOptions()
    given = {k: parameters[k] for k in REQUEST_PARAMETERS if parameters and k in parameters}
    if not given:
        return base
    fields = {k: _parameter(k, v) for k, v in given.items() if k != "decoding"}
    if "decoding" in given:
        shared = {"seed": base.seed, "length_penalty": base.length_penalty,
                  "no_repeat_ngram_size": base.no_repeat_ngram_size, "max_new_tokens": base.max_new_tokens}
        opts = DecodingOptions.parse(str(given["decoding"]), **{**shared, **fields})
    else:
        opts = base.with_(**fields)
    if max(opts.beams, opts.n_best) > max_width:
        raise ValueError(f"parameters beams and n_best: at most {max_width} per request, got "
                         f"{max(opts.beams, opts.n_best)}")
    return opts
