"""What ``pvlm-video`` writes: JSON lines that ``pvlm-index`` reads as they are, thumbnails, store records.

A track line is a ``pvlm-describe --json`` line (schema_version, bundle_id, backend, image, text,
attributes, timings, error) plus ``kind: "track"``, camera, track, timestamp and box (of the crop whose
text is kept), first_seen and last_seen (epoch seconds), frame (1-based), frames (how many the track
was seen in), crops (how many were described), agreement (per attribute, the share of crops that agree
with the vote) and thumb (the JPEG's path, with ``--thumbs``). ``--per-crop`` adds one ``kind: "crop"``
line per described crop, with its own text, attributes, box, time and quality.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..description_schema import description_record
from .pipeline import CropDescription, TrackDescription

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _box(box: Any) -> list[float]:
    return [round(float(v), 1) for v in box]


def _base(image: str, description: Any, bundle: str, backend: str) -> dict[str, Any]:
    return description_record(image, description, bundle=bundle, backend=backend)


class _Failed:
    """The Description-like stand-in for a track none of whose crops could be described."""

    def __init__(self, error: str) -> None:
        self.text, self.attributes, self.timings, self.error = "", {}, {}, error


def frame_ref(video: str, frame: int) -> str:
    """``VIDEO#frame=N`` (1-based): the ``image`` of a line, naming where its crop came from."""
    return f"{video}#frame={frame + 1}"


def track_line(td: TrackDescription, *, video: str, bundle: str, backend: str,
               thumb: str | None = None) -> dict[str, Any]:
    """The JSON line of one track (see the module's docstring)."""
    best = td.best_crop
    if best is None:
        first = td.crops[0] if td.crops else None
        rec = _base(frame_ref(video, first.frame if first else td.first_frame), _Failed(td.error or ""), bundle,
                    backend)
        ts, box, frame = (first.timestamp, first.box, first.frame) if first else (td.first_seen, None, td.first_frame)
    else:
        rec = _base(frame_ref(video, best.frame), best.description, bundle, backend)
        rec["attributes"] = td.attributes
        ts, box, frame = best.timestamp, best.box, best.frame
    rec.update({
        "kind": "track", "camera": td.camera, "track": td.track, "timestamp": round(ts, 3),
        "box": None if box is None else _box(box), "first_seen": round(td.first_seen, 3),
        "last_seen": round(td.last_seen, 3), "frame": frame + 1, "frames": td.frames, "crops": len(td.crops),
        "agreement": td.agreement,
    })
    if td.part > 1:
        rec["part"] = td.part
    if thumb is not None:
        rec["thumb"] = thumb
    return rec


def crop_line(td: TrackDescription, crop: CropDescription, *, video: str, bundle: str, backend: str) -> dict[str, Any]:
    """The JSON line of one described crop of a track (``--per-crop``)."""
    rec = _base(frame_ref(video, crop.frame), crop.description, bundle, backend)
    rec.update({"kind": "crop", "camera": td.camera, "track": td.track, "timestamp": round(crop.timestamp, 3),
                "box": _box(crop.box), "frame": crop.frame + 1, "quality": crop.quality.as_dict()})
    return rec


def thumb_name(td: TrackDescription) -> str:
    """``CAMERA_TRACK.jpg`` (``_partN`` after the first part), unsafe characters replaced by ``-``."""
    part = f"_part{td.part}" if td.part > 1 else ""
    return f"{_UNSAFE.sub('-', td.camera)}_{_UNSAFE.sub('-', td.track)}{part}.jpg"


def write_thumb(directory: str | Path, td: TrackDescription, quality: int = 90) -> Path | None:
    """Save the kept crop of ``td`` as a JPEG in ``directory`` (atomically); None when it has none."""
    from PIL import Image

    from ..atomic import atomic_path

    best = td.best_crop
    if best is None:
        return None
    path = Path(directory) / thumb_name(td)
    with atomic_path(path) as tmp:
        Image.fromarray(best.crop).save(tmp, format="JPEG", quality=quality)
    return path


def store_record(td: TrackDescription, bundle: str | None) -> Any:
    """The track as a :class:`runtime.search.Record` (None when no crop was described)."""
    from ..search import Record

    best = td.best_crop
    if best is None:
        return None
    return Record(td.camera, td.track, round(best.timestamp, 3), best.description.text, td.attributes,
                  tuple(_box(best.box)), bundle)


__all__ = ["crop_line", "frame_ref", "store_record", "thumb_name", "track_line", "write_thumb"]
