"""Word-level vocabulary: lowercase, punctuation split off, hyphenated words kept."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from runtime.atomic import write_json
from runtime.describer import detokenize

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[^\sa-z0-9]")
FORMAT = "pvlm-vocab"


def tokenize(text: str) -> list[str]:
    """Split lowercased text into words (hyphens and apostrophes kept inside) and punctuation."""
    return _TOKEN.findall(text.lower())


class Vocabulary:
    """Token <-> id mapping with ``<pad> <bos> <eos> <unk>`` at ids 0-3."""

    def __init__(self, tokens: Sequence[str], min_freq: int = 1):
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}, got {tuple(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary has duplicate tokens")
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.min_freq = min_freq

    pad_id, bos_id, eos_id, unk_id = PAD, BOS, EOS, UNK

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    @classmethod
    def build(cls, captions: Iterable[str], min_freq: int = 5, max_size: int = 5000) -> "Vocabulary":
        """Most frequent tokens (ties broken alphabetically, so ids are deterministic)."""
        if max_size <= len(SPECIALS):
            raise ValueError(f"max_size must exceed {len(SPECIALS)}, got {max_size}")
        counts = Counter(t for c in captions for t in tokenize(c))
        kept = sorted((t for t, n in counts.items() if n >= min_freq and t not in SPECIALS), key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + kept[: max_size - len(SPECIALS)], min_freq=min_freq)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Text -> ids, wrapped in ``<bos> ... <eos>`` unless ``add_special`` is False."""
        ids = [self.stoi.get(t, UNK) for t in tokenize(text)]
        return [BOS, *ids, EOS] if add_special else ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Ids -> text, stopping at ``<eos>``; punctuation re-attached to the previous word (the runtime's rule)."""
        ids = [int(i) if int(i) >= 0 else UNK for i in ids]
        if not skip_special:
            return detokenize(ids, self.itos, n_special=0)
        return detokenize(ids[: ids.index(EOS)] if EOS in ids else ids, self.itos)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, as saved in checkpoints and bundles."""
        return {"format": FORMAT, "version": 1, "tokens": list(self.itos), "min_freq": self.min_freq}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Vocabulary":
        """Read ours or the original repository's ``{"token2id": {...}, "min_freq": N}``."""
        if not isinstance(d, dict):
            raise ValueError(f"not a vocabulary: expected a JSON object, got {type(d).__name__}")
        if "tokens" in d:
            return cls(d["tokens"], min_freq=int(d.get("min_freq", 1)))
        if "token2id" in d:
            t2i = d["token2id"]
            ids = sorted(t2i.values())
            if ids != list(range(len(ids))):
                raise ValueError("token2id ids are not contiguous from 0")
            itos = [""] * len(ids)
            for tok, i in t2i.items():
                itos[i] = tok
            return cls(itos, min_freq=int(d.get("min_freq", 1)))
        raise ValueError("not a vocabulary: expected a 'tokens' or 'token2id' key")

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically."""
        write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """Read a vocabulary JSON file (ours or the original repository's)."""
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"cannot read vocabulary {path}: {e}") from e
        try:
            return cls.from_dict(d)
        except (TypeError, AttributeError) as e:  # right JSON, wrong shapes inside
            raise ValueError(f"cannot read vocabulary {path}: malformed ({e})") from e
