"""Videos to descriptions: one description per person from a video and its tracks (``pvlm-video``).

Torch-free, like the rest of ``runtime``; PyAV, supervision and SciPy (``pip install
'personvlm-toolkit[video]'``) are imported only where they are used. ``import runtime.video`` is light:
the names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "VideoDescriber": "pipeline", "VideoOptions": "pipeline", "TrackDescription": "pipeline",
    "CropDescription": "pipeline", "VideoStats": "pipeline",
    "VideoSource": "source", "VideoError": "source", "VideoDamaged": "source",
    "Tracks": "tracks", "TracksError": "tracks", "read_tracks": "tracks",
    "BackgroundDetector": "detector", "Detector": "detector", "load_detector": "detector",
    "ByteTracker": "tracker",
    "track_line": "output", "crop_line": "output", "store_record": "output",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime.video' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
