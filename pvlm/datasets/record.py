"""One imported crop, the JSONL row it becomes, and the seeded hold-out rule for datasets without a partition."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .template import template_caption

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImportedRecord:
    """A crop as a reader found it.

    ``image``: where the file is; ``rel``: a unique relative name for it (its place under ``images/`` with
    ``--copy``); ``caption``: the dataset's own, or None (a template caption is written from the labels);
    ``split``: one of :data:`SPLITS`; ``person``: the identity where the dataset has one; ``extra``: fields
    kept as the source had them (MSP60k's ``one_hot``).
    """

    image: Path
    rel: str
    attributes: dict[str, Any]
    split: str
    caption: str | None = None
    person: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, dataset: str, image: str) -> dict[str, Any]:
        """The JSONL row ``pvlm-train`` reads (``image``, ``answer``, ``attributes``) plus provenance."""
        templated = self.caption is None
        out: dict[str, Any] = {
            "image": image,
            "answer": template_caption(self.attributes) if templated else self.caption,
            "caption_source": "template" if templated else "dataset",
            "attributes": self.attributes,
            "dataset": dataset,
        }
        if self.person is not None:
            out["person"] = self.person
        return {**out, **self.extra}


def held_out(key: str, fraction: float, seed: int) -> bool:
    """Whether ``key`` (an identity or an image name) falls in the validation share; depends on (seed, key) only,
    so all crops of one person land on the same side and a re-import gives the same split."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


__all__ = ["SPLITS", "ImportedRecord", "held_out"]
