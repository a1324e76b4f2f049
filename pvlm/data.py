"""MSP60k-style JSONL datasets (``image``, ``answer``, optional ``attributes`` or MSP60k ``one_hot``) and the
image transform."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from runtime.preprocess import pil_to_rgb  # torch-free; the one conversion rule

from .attribute_targets import attribute_targets
from .vocab import Vocabulary

if TYPE_CHECKING:  # reading JSONL and resizing stay torch-free (pvlm-eval --no-reference, the bench inputs)
    import torch

    from .model import PersonVLMConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One dataset row."""

    image: Path
    caption: str
    attributes: dict[str, Any] = field(default_factory=dict)


def resolve_image(value: str, jsonl_dir: Path, image_root: Path | None) -> Path:
    """Relative paths (or absolute ones that do not exist) resolve against ``image_root``, else the JSONL's folder."""
    p = Path(value)
    if p.is_absolute() and p.exists():
        return p
    base = image_root if image_root is not None else jsonl_dir
    return base / (p.name if p.is_absolute() else p)


def load_jsonl(path: str | os.PathLike, image_root: str | os.PathLike | None = None, verify: bool = True) -> list[Record]:
    """Read a dataset; unreadable/missing images and malformed lines are counted and skipped with a warning."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dataset file")
    root = Path(image_root) if image_root is not None else None
    records: list[Record] = []
    bad_lines = bad_images = 0
    with open(path, "rb") as f:  # decoded line by line: one invalid UTF-8 line must not lose the file
        for raw in f:
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                caption = str(row["answer"])
                img = resolve_image(str(row["image"]), path.parent, root)
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                bad_lines += 1
                continue
            if verify and not _readable(img):
                bad_images += 1
                continue
            records.append(Record(img, caption, _labels(row)))
    if bad_lines or bad_images:
        log.warning("%s: skipped %d malformed line(s) and %d missing/unreadable image(s); %d usable",
                    path, bad_lines, bad_images, len(records))
    return records


def _labels(row: dict[str, Any]) -> dict[str, Any]:
    """A row's ``attributes``; else an MSP60k ``one_hot`` mapped onto the schema (``pvlm.datasets.msp60k``)."""
    if row.get("attributes"):
        return dict(row["attributes"])
    if "one_hot" in row:
        from .datasets.msp60k import one_hot_attributes  # here: pvlm.datasets imports this module

        return one_hot_attributes(row["one_hot"]) or {}
    return {}


def _readable(p: Path) -> bool:
    try:
        with Image.open(p) as im:
            im.verify()
        return True
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False


def resize_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Any PIL image -> uint8 (H, W, 3) RGB, stretched to ``size`` (height, width) with bilinear filtering.

    Modes are converted by the runtime's own rule (16-bit scaled, alpha composited), so training and
    inference see the same pixels.
    """
    if image.mode != "RGB":
        image = pil_to_rgb(image)
    return np.asarray(image.resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)


def normalize(hwc: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) normalised by ``mean``/``std`` (0-1 scale)."""
    x = hwc.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess(image: Image.Image, cfg: PersonVLMConfig) -> torch.Tensor:
    """The training/inference transform: resize, scale to [0, 1], normalise -> (3, H, W)."""
    import torch

    return torch.from_numpy(normalize(resize_rgb(image, cfg.image_size), cfg.mean, cfg.std))


_SIDE_WORDS = re.compile(r"\b(left|right)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Augment:
    """Training augmentations that keep the caption true.

    A mild random crop (``min_scale`` of each side, then resized back: people arrive framed a little
    tighter or looser and at other resolutions), brightness by at most ``brightness`` (a colour name
    survives it; no hue or saturation jitter, which turns red into orange), and a horizontal flip,
    unless the caption says left or right. Draws depend only on (seed, epoch, index).
    """

    seed: int = 0
    min_scale: float = 0.85
    brightness: float = 0.1
    flip: bool = True

    def __call__(self, hwc: np.ndarray, caption: str, epoch: int, index: int) -> np.ndarray:
        """uint8 (H, W, 3) -> an augmented uint8 (H, W, 3) of the same size."""
        rng = np.random.default_rng((self.seed, epoch, index))
        h, w = hwc.shape[:2]
        s = rng.uniform(self.min_scale, 1.0)
        ch, cw = s * h, rng.uniform(self.min_scale, 1.0) * w
        y0, x0 = rng.uniform(0, h - ch), rng.uniform(0, w - cw)
        img = Image.fromarray(hwc).resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        if self.flip and rng.random() < 0.5 and not _SIDE_WORDS.search(caption):
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = np.asarray(img, np.float32) * rng.uniform(1 - self.brightness, 1 + self.brightness)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class CaptionDataset:
    """Images decoded and resized once into memory (uint8), captions encoded once; ``augment`` per draw."""

    def __init__(self, records: list[Record], vocab: Vocabulary, cfg: PersonVLMConfig, progress: bool = True,
                 augment: Augment | None = None):
        self.cfg, self.records, self.augment, self.epoch = cfg, records, augment, 0
        h, w = cfg.image_size
        self.images = np.empty((len(records), h, w, 3), np.uint8)
        for i, r in enumerate(tqdm(records, desc="loading images", disable=not progress, leave=False)):
            with Image.open(r.image) as im:
                self.images[i] = resize_rgb(im, cfg.image_size)
        self.ids = [vocab.encode(r.caption)[: cfg.max_len] for r in records]
        self.targets = [attribute_targets(r.attributes) for r in records]  # (attribute heads; IGNORE if unlabelled)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pixels (3, H, W), token ids (T,), attribute targets (fields,))."""
        import torch

        img = self.images[i]
        if self.augment is not None:
            img = self.augment(img, self.records[i].caption, self.epoch, i)
        x = torch.from_numpy(normalize(img, self.cfg.mean, self.cfg.std))
        return x, torch.tensor(self.ids[i], dtype=torch.long), torch.tensor(self.targets[i], dtype=torch.long)


def collate(batch: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
            pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack inputs (pixels or cached features) and attribute targets; right-pad token ids with ``pad_id``."""
    import torch

    inputs = torch.stack([b[0] for b in batch])
    t = max(len(b[1]) for b in batch)
    ids = torch.full((len(batch), t), pad_id, dtype=torch.long)
    for i, (_, seq, _) in enumerate(batch):
        ids[i, : len(seq)] = seq
    return inputs, ids, torch.stack([b[2] for b in batch])


def data_hash(records: list[Record]) -> str:
    """Short sha256 over image names and captions, recorded in checkpoints."""
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.image.name}\t{r.caption}\n".encode())
    return h.hexdigest()[:16]
