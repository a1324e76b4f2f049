"""``pvlm-data doctor``: check a dataset before training, torch-free.

Errors (the run would train on something wrong): malformed lines, missing or unreadable images, empty
captions, the same image (by content hash) in training and validation. Warnings (worth a look): duplicate
images within a file, the same person on both sides, captions longer than the presets' 64 tokens, words
the vocabulary will not cover, attributes with one value dominating or none known, crops too small to see.
Each finding names up to :data:`EXAMPLES` places as ``file:line``.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from runtime.attribute_schema import FIELDS

from .data import resolve_image
from .vocab import Vocabulary, tokenize

EXAMPLES = 5
MAX_TOKENS = 62  # the presets' max_len 64 less BOS and EOS: longer captions are cut
DOMINANT = 0.95  # a head field whose commonest value is this share of its labels teaches the head little


@dataclass
class Finding:
    """One problem: ``level`` error or warning, the ``check`` that found it, a message, ``file:line`` examples."""

    level: str
    check: str
    message: str
    examples: list[str] = field(default_factory=list)


@dataclass
class Row:
    """One parsed line: where it is, its caption, labels, person and what its image turned out to be."""

    where: str
    image: Path
    caption: str
    attributes: dict[str, Any]
    person: str | None = None
    digest: str | None = None
    size: tuple[int, int] | None = None  # (height, width)
    error: str | None = None


@dataclass
class DoctorReport:
    """All findings and statistics of one check; ``ok`` when there is no error."""

    files: dict[str, int]
    findings: list[Finding]
    stats: dict[str, Any]

    @property
    def ok(self) -> bool:
        """No error-level finding."""
        return not any(f.level == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        by = {lvl: [asdict(f) for f in self.findings if f.level == lvl] for lvl in ("error", "warning")}
        return {"ok": self.ok, "files": self.files, "errors": by["error"], "warnings": by["warning"],
                "stats": self.stats}


def check_dataset(train: str | Path, val: str | Path | None = None, image_root: str | Path | None = None,
                  min_size: tuple[int, int] = (48, 16), workers: int = 4, progress: bool = True) -> DoctorReport:
    """Run every check over ``train`` (and ``val``); ``min_size`` (height, width) is the smallest useful crop."""
    root = Path(image_root) if image_root is not None else None
    findings: list[Finding] = []
    splits = {"train": _read(Path(train), root, findings)}
    if val is not None:
        splits["val"] = _read(Path(val), root, findings)
    everything = [r for rows in splits.values() for r in rows]
    _inspect_images(everything, workers, progress)
    stats: dict[str, Any] = {}
    findings += _image_findings(everything, min_size, stats)
    usable = {s: [r for r in rows if not r.error] for s, rows in splits.items()}  # what training would read
    for rows in usable.values():
        findings += _duplicates(rows)
    if "val" in usable:
        findings += _leakage(usable["train"], usable["val"])
    findings += _captions(usable, stats)
    findings += _labels(usable["train"], stats)
    files = {str(p): len(rows) for p, rows in zip([train, val], splits.values())}
    return DoctorReport(files, findings, stats)


def _read(path: Path, root: Path | None, findings: list[Finding]) -> list[Row]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dataset file")
    rows, bad = [], []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(raw.decode("utf-8"))
                person = f"{obj.get('dataset')}/{obj['person']}" if obj.get("person") else None
                rows.append(Row(where, resolve_image(str(obj["image"]), path.parent, root), str(obj["answer"]),
                                obj.get("attributes") or {}, person))
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
                bad.append(where)
    if bad:
        findings.append(Finding("error", "lines", f"{len(bad)} malformed line(s) in {path} (not JSON with "
                                "'image' and 'answer')", bad[:EXAMPLES]))
    return rows


def _inspect(row: Row) -> None:
    try:
        with open(row.image, "rb") as f:
            row.digest = hashlib.file_digest(f, "sha256").hexdigest()
        with Image.open(row.image) as im:
            row.size = (im.height, im.width)
            im.verify()
    except FileNotFoundError:
        row.error = "missing"
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        row.error = "unreadable"


def _inspect_images(rows: list[Row], workers: int, progress: bool) -> None:
    bar = tqdm(total=len(rows), desc="checking images", unit="img", disable=not progress, leave=False)
    with ThreadPoolExecutor(max(1, workers)) as pool:  # hashing and decoding release the GIL: threads suffice
        for _ in pool.map(_inspect, rows):
            bar.update()
    bar.close()


def _image_findings(rows: list[Row], min_size: tuple[int, int], stats: dict[str, Any]) -> list[Finding]:
    out = []
    broken = [f"{r.where}: {r.error} {r.image}" for r in rows if r.error]
    if broken:
        out.append(Finding("error", "images", f"{len(broken)} image(s) missing or unreadable", broken[:EXAMPLES]))
    sizes = [r.size for r in rows if r.size and not r.error]
    small = [f"{r.where}: {r.size[0]}x{r.size[1]}" for r in rows
             if r.size and not r.error and (r.size[0] < min_size[0] or r.size[1] < min_size[1])]
    if small:
        out.append(Finding("warning", "small-crops", f"{len(small)} crop(s) smaller than {min_size[0]}x{min_size[1]} "
                           "(HxW): too small to see garments or colours", small[:EXAMPLES]))
    if sizes:
        hs, ws = [s[0] for s in sizes], [s[1] for s in sizes]
        stats["image_size"] = {"median_height": statistics.median(hs), "median_width": statistics.median(ws),
                               "min_height": min(hs), "min_width": min(ws), "smaller_than_min": len(small)}
    return out


def _duplicates(rows: list[Row]) -> list[Finding]:
    groups: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.digest:
            groups[r.digest].append(r.where)
    dup = [" = ".join(w[:3]) for w in groups.values() if len(w) > 1]
    if not dup:
        return []
    extra = sum(len(w) - 1 for w in groups.values())
    return [Finding("warning", "duplicates", f"{len(dup)} image(s) appear more than once by content "
                    f"({extra} extra row(s))", dup[:EXAMPLES])]


def _leakage(train: list[Row], val: list[Row]) -> list[Finding]:
    out = []
    seen = {r.digest: r.where for r in train if r.digest}
    both = [f"{seen[r.digest]} = {r.where}" for r in val if r.digest in seen]
    if both:
        out.append(Finding("error", "leakage", f"{len(both)} validation image(s) are also in training "
                           "(same content): the validation loss would be optimistic", both[:EXAMPLES]))
    people = {r.person: r.where for r in train if r.person}
    same = [f"{people[r.person]} ~ {r.where} ({r.person})" for r in val if r.person in people]
    if same:
        out.append(Finding("warning", "person-leakage", f"{len(same)} validation row(s) show a person who is "
                           "also in training", same[:EXAMPLES]))
    return out


def _captions(splits: dict[str, list[Row]], stats: dict[str, Any]) -> list[Finding]:
    out = []
    lengths = {s: [len(tokenize(r.caption)) for r in rows] for s, rows in splits.items()}
    empty = [r.where for rows in splits.values() for r in rows if not tokenize(r.caption)]
    if empty:
        out.append(Finding("error", "captions", f"{len(empty)} empty caption(s)", empty[:EXAMPLES]))
    long = [f"{r.where}: {n} tokens" for s, rows in splits.items() for r, n in zip(rows, lengths[s]) if n > MAX_TOKENS]
    if long:
        out.append(Finding("warning", "captions", f"{len(long)} caption(s) longer than {MAX_TOKENS} tokens: the "
                           "presets (max_len 64) train on their beginning only", long[:EXAMPLES]))
    stats["caption_tokens"] = {s: _spread(v) for s, v in lengths.items() if v}
    vocab = Vocabulary.build((r.caption for r in splits["train"]), min_freq=2, max_size=5000)
    known = set(vocab.itos)
    cover = {}
    for s, rows in splits.items():
        tokens = [t for r in rows for t in tokenize(r.caption)]
        cover[s] = sum(t in known for t in tokens) / max(1, len(tokens))
    stats["vocabulary"] = {"size": len(vocab), "min_freq": 2, "coverage": {s: round(c, 4) for s, c in cover.items()}}
    low = [f"{s}: {c:.1%} of tokens known" for s, c in cover.items() if c < 0.95]
    if low:
        out.append(Finding("warning", "vocabulary", "the training vocabulary (words seen twice, at most 5,000) "
                           "misses over 5% of the caption tokens", low))
    return out


def _spread(values: list[int]) -> dict[str, float]:
    v = sorted(values)
    return {"min": v[0], "median": statistics.median(v), "p95": v[min(len(v) - 1, int(0.95 * len(v)))], "max": v[-1]}


def _labels(rows: list[Row], stats: dict[str, Any]) -> list[Finding]:
    out, table = [], {}
    for f in FIELDS:
        values = Counter(_value(r.attributes.get(f.key)) for r in rows)
        unknown = values.pop(None, 0)
        table[f.key] = {"known": sum(values.values()), "unknown": unknown, "values": dict(values.most_common())}
        if not f.drawn or not values:
            continue
        top, n = values.most_common(1)[0]
        share = n / sum(values.values())
        if share >= DOMINANT and sum(values.values()) >= 20:
            out.append(Finding("warning", "labels", f"{f.key}: '{top}' is {share:.0%} of the {sum(values.values())} "
                               "known labels: its attribute head learns little beyond that"))
    stats["labels"] = table
    if rows and not any(v["known"] for v in table.values()):
        out.append(Finding("warning", "labels", "no row has attribute labels: the attribute heads get no signal "
                           "(pvlm-data import maps dataset labels)"))
    return out


def _value(v: Any) -> str | None:
    if isinstance(v, list):
        return "none" if not v else "+".join(v)
    return None if v is None else str(v)


def render_text(report: DoctorReport) -> str:
    """The human report: one line per check (tick or cross), examples indented, then label balance."""
    lines = [f"dataset: {', '.join(f'{p} ({n} rows)' for p, n in report.files.items())}"]
    checks = ("lines", "images", "duplicates", "leakage", "person-leakage", "captions", "vocabulary", "labels",
              "small-crops")
    for check in checks:
        found = [f for f in report.findings if f.check == check]
        if not found:
            lines.append(f"  ok  {check}")
        for f in found:
            lines.append(f"  {'ERR' if f.level == 'error' else 'warn'} {check}: {f.message}")
            lines += [f"        {e}" for e in f.examples]
    lines += _stats_lines(report.stats)
    lines.append("result: " + ("ok" if report.ok else f"{sum(f.level == 'error' for f in report.findings)} error(s)"))
    return "\n".join(lines)


def _stats_lines(stats: dict[str, Any]) -> list[str]:
    lines = []
    for split, s in stats.get("caption_tokens", {}).items():
        lines.append(f"caption tokens ({split}): min {s['min']}, median {s['median']:g}, p95 {s['p95']}, "
                     f"max {s['max']}")
    if "vocabulary" in stats:
        v = stats["vocabulary"]
        cover = ", ".join(f"{s} {c:.1%}" for s, c in v["coverage"].items())
        lines.append(f"vocabulary: {v['size']} entries; tokens covered: {cover}")
    if stats.get("labels"):
        lines.append("labels (train):")
    for key, t in stats.get("labels", {}).items():
        total = t["known"] + t["unknown"]
        top = ", ".join(f"{k} {n / max(1, t['known']):.0%}" for k, n in list(t["values"].items())[:4])
        lines.append(f"  {key:<12} known {t['known']}/{total}" + (f": {top}" if top else ""))
    return lines


__all__ = ["DoctorReport", "Finding", "check_dataset", "render_text"]
