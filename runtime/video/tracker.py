"""Linking detections into tracks with ByteTrack (the ``supervision`` package's implementation)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

_INSTALL = "pip install 'personvlm-toolkit[video]'"


class ByteTracker:
    """ByteTrack over (N, 5) ``x0, y0, x1, y1, score`` detections, one frame at a time.

    ``fps``: the video's frame rate (ByteTrack counts a lost track's patience in frames of 30 fps);
    ``lost_s``: how long a track that is no longer detected can still be picked up again;
    ``activation``: the score a detection needs to start a track; ``match``: ByteTrack's cost threshold
    for matching (1 - IoU). The defaults (2 s, 0.7; ByteTrack's own are 1 s, 0.8) were the best of those
    tried on the synthetic test videos, where people hide each other for a second or more.
    """

    def __init__(self, fps: float, *, lost_s: float = 2.0, activation: float = 0.25, match: float = 0.7) -> None:
        try:
            with warnings.catch_warnings():  # its "OpenCV is not installed" notice: ByteTrack does not use it
                warnings.simplefilter("ignore")
                import supervision as sv
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(f"tracking detections needs supervision: {_INSTALL}", name=e.name) from None
        if not hasattr(sv, "ByteTrack"):
            raise ImportError(f"supervision {sv.__version__} has no ByteTrack (removed in 0.31): "
                              "pip install 'supervision>=0.30,<0.31'")
        self._sv = sv
        with warnings.catch_warnings():  # deprecated since 0.28 in favour of a package that needs numpy 2
            warnings.simplefilter("ignore")
            self._tracker: Any = sv.ByteTrack(track_activation_threshold=activation, frame_rate=fps,
                                              lost_track_buffer=max(1, round(lost_s * 30)),
                                              minimum_matching_threshold=match)

    def update(self, detections: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One frame's detections -> (ids (M,) int64, boxes (M, 4), scores (M,)) of the tracked ones."""
        d = np.asarray(detections, dtype=np.float32).reshape(-1, 5)
        dets = self._sv.Detections(xyxy=d[:, :4].astype(np.float32), confidence=d[:, 4].astype(np.float32),
                                   class_id=np.zeros(len(d), dtype=int))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self._tracker.update_with_detections(dets)
        if out.tracker_id is None or len(out) == 0:
            return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)
        conf = out.confidence if out.confidence is not None else np.ones(len(out))
        return (np.asarray(out.tracker_id, np.int64), np.asarray(out.xyxy, np.float64),
                np.asarray(conf, np.float64))


__all__ = ["ByteTracker"]
