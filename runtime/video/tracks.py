"""MOTChallenge tracks files: ``frame,id,x,y,w,h[,conf,...]``, one box per line, read and checked whole.

``frame`` counts decoded frames from 1; ``x, y, w, h`` are pixels from the frame's top-left corner;
``id`` is the track (an integer >= 0), or -1 for a detection without one (the whole file then holds
detections, for a tracker to link). ``conf`` (column 7) is kept as the box's score (1.0 when absent
or -1). Columns after the seventh are ignored. Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_LINE_CHARS = 4096
_FIELDS = ("frame", "id", "x", "y", "w", "h")


class TracksError(ValueError):
    """A tracks file that cannot be used; the message names the file and line (``tracks.txt:17: ...``)."""


@dataclass(frozen=True)
class FrameBoxes:
    """The boxes of one frame: ``ids`` (N,) int64 (-1: no id), ``boxes`` (N, 4) float64 x0, y0, x1, y1 in pixels,
    ``scores`` (N,) float64, ``lines`` (N,) int64: each box's line in the file."""

    ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Tracks:
    """A whole tracks file indexed by frame (1-based). ``tracked``: the boxes carry track ids."""

    path: str
    tracked: bool
    frames: dict[int, FrameBoxes] = field(repr=False)
    rows: int = 0

    @property
    def last_frame(self) -> int:
        """The highest frame number in the file (0 when it is empty)."""
        return max(self.frames, default=0)

    def at(self, frame: int) -> FrameBoxes:
        """The boxes of ``frame`` (1-based); empty when the file has none there."""
        return self.frames.get(frame) or _EMPTY

    def track_ids(self) -> set[int]:
        """Every track id in the file (empty for detections)."""
        return {int(i) for fb in self.frames.values() for i in fb.ids if i >= 0}


_EMPTY = FrameBoxes(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))


def _number(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{name} is not a number: {text.strip()!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {text.strip()!r}")
    return v


def _integer(text: str, name: str) -> int:
    v = _number(text, name)
    if v != int(v):
        raise ValueError(f"{name} must be an integer, got {text.strip()!r}")
    return int(v)


def parse_line(line: str) -> tuple[int, int, float, float, float, float, float]:
    """One MOT line -> (frame, id, x0, y0, x1, y1, score); ValueError saying what is wrong."""
    parts = line.replace(" ", "").replace("\t", "").split(",") if "," in line else line.split()
    if len(parts) < 6:
        raise ValueError(f"expected at least 6 comma-separated fields (frame,id,x,y,w,h), got {len(parts)}")
    frame = _integer(parts[0], "frame")
    if frame < 1:
        raise ValueError(f"frame must be >= 1 (MOT counts frames from 1), got {frame}")
    tid = _integer(parts[1], "id")
    if tid < -1:
        raise ValueError(f"id must be >= 0, or -1 for a detection without a track, got {tid}")
    x, y, w, h = (_number(p, n) for p, n in zip(parts[2:6], _FIELDS[2:]))
    if w <= 0 or h <= 0:
        raise ValueError(f"width and height must be > 0, got w={parts[4].strip()} h={parts[5].strip()}")
    score = 1.0
    if len(parts) > 6 and parts[6].strip():
        score = _number(parts[6], "conf")
        if score == -1:
            score = 1.0
    return frame, tid, x, y, x + w, y + h, score


def _lines(path: str) -> Iterator[tuple[int, str]]:
    try:
        with open(path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                if len(raw) > MAX_LINE_CHARS:
                    raise TracksError(f"{path}:{n}: line longer than {MAX_LINE_CHARS} bytes")
                try:
                    yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise TracksError(f"{path}:{n}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})") \
                        from None
    except OSError as e:
        raise TracksError(f"{path}: cannot read: {e.strerror or e}") from None


def read_tracks(path: str | os.PathLike) -> Tracks:
    """Read and check a whole MOT file. The first bad line raises :class:`TracksError` (``FILE:LINE: what``,
    with how many more bad lines there are); nothing is returned from a file with any bad line."""
    name = str(path)
    if Path(name).is_dir():
        raise TracksError(f"{name}: is a directory, not a tracks file")
    rows: list[tuple[int, int, float, float, float, float, float, int]] = []
    errors: list[str] = []
    seen: dict[tuple[int, int], int] = {}
    tracked: tuple[bool, int] | None = None  # (has ids, line that decided it)
    for n, text in _lines(name):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            row = parse_line(stripped)
        except ValueError as e:
            errors.append(f"{name}:{n}: {e}")
            continue
        frame, tid = row[0], row[1]
        if tracked is None:
            tracked = (tid >= 0, n)
        elif (tid >= 0) != tracked[0]:
            kind = "a track id" if tid >= 0 else "id -1 (a detection without a track)"
            errors.append(f"{name}:{n}: {kind}, but line {tracked[1]} "
                          f"{'has a track id' if tracked[0] else 'has id -1'}: a file holds tracks or detections, "
                          "not both")
            continue
        if tid >= 0:
            first = seen.setdefault((frame, tid), n)
            if first != n:
                errors.append(f"{name}:{n}: track {tid} appears twice in frame {frame} (also line {first})")
                continue
        rows.append((*row, n))
    if errors:
        more = f" (and {len(errors) - 1} more bad line{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise TracksError(errors[0] + more)
    return Tracks(name, bool(tracked and tracked[0]), _index(rows), len(rows))


def _index(rows: list[tuple[int, int, float, float, float, float, float, int]]) -> dict[int, FrameBoxes]:
    if not rows:
        return {}
    arr = np.array(rows, dtype=np.float64)
    arr = arr[np.lexsort((arr[:, 7], arr[:, 0]))]  # by frame, then file order
    frames = arr[:, 0].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]])
    ends = np.r_[starts[1:], len(arr)]
    out: dict[int, FrameBoxes] = {}
    for s, e in zip(starts, ends):
        block = arr[s:e]
        out[int(frames[s])] = FrameBoxes(block[:, 1].astype(np.int64), block[:, 2:6].copy(), block[:, 6].copy(),
                                         block[:, 7].astype(np.int64))
    return out


def write_tracks(path: str | os.PathLike, rows: list[tuple[int, int, float, float, float, float, float]]) -> None:
    """Write ``(frame, id, x0, y0, x1, y1, score)`` rows as a MOT file (atomic)."""
    from ..atomic import write_text

    lines = [f"{f},{i},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},{s:.3f},-1,-1,-1"
             for f, i, x0, y0, x1, y1, s in rows]
    write_text(path, "".join(line + "\n" for line in lines))


__all__ = ["FrameBoxes", "Tracks", "TracksError", "parse_line", "read_tracks", "write_tracks"]
