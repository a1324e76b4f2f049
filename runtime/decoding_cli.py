"""The decoding flags shared by ``pvlm-describe`` and ``pvlm-eval`` and the ``alternatives`` JSON field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .decoding import DEFAULT_NO_REPEAT_NGRAM, DecodingOptions


def decoding_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--beams --n-best --sample --temperature --top-k --top-p --seed --length-penalty --no-repeat-ngram``."""
    opts = [
        click.option("--beams", type=int, default=1, show_default=True, help="Beam search width (1: greedy)."),
        click.option("--n-best", type=int, default=1, show_default=True,
                     help="Sequences returned per image (beams >= n-best, or draws with --sample)."),
        click.option("--sample", is_flag=True, help="Sample instead of greedy/beam search (seeded)."),
        click.option("--temperature", type=float, default=1.0, show_default=True, help="Sampling temperature."),
        click.option("--top-k", type=int, default=0, show_default=True, help="Sampling top-k (0: off)."),
        click.option("--top-p", type=float, default=1.0, show_default=True, help="Sampling top-p (1.0: off)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed."),
        click.option("--length-penalty", type=float, default=1.0, show_default=True,
                     help="Score = log-prob / length ** this."),
        click.option("--no-repeat-ngram", type=int, default=DEFAULT_NO_REPEAT_NGRAM, show_default=True,
                     help="Repetition guard: never repeat an n-gram of this size (0: off)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def decoding_from_flags(beams: int, n_best: int, sample: bool, temperature: float, top_k: int, top_p: float,
                        seed: int, length_penalty: float, no_repeat_ngram: int) -> DecodingOptions:
    """The flags as DecodingOptions; a bad value is a ValueError with one line naming the option."""
    return DecodingOptions(beams=beams, n_best=n_best, sample=sample, temperature=temperature, top_k=top_k,
                           top_p=top_p, seed=seed, length_penalty=length_penalty,
                           no_repeat_ngram_size=no_repeat_ngram)


def alternatives_record(description: Any, tokens: bool = False) -> list[dict[str, Any]]:
    """Every returned sequence of a Description, best first: text, score, attributes (token ids if asked)."""
    out = []
    for a in description.alternatives:
        item = {"text": a.text, "score": None if a.score is None else round(a.score, 6), "attributes": a.attributes}
        if tokens:
            item["tokens"] = list(a.tokens)
        out.append(item)
    return out
