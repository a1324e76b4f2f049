"""From frames and boxes to one description per track: the Python API under ``pvlm-video``.

:class:`VideoDescriber` takes one frame at a time (from PyAV, OpenCV or a service's own decoder) with
the boxes of its tracks, or detections for ByteTrack to link, or nothing (its detector finds people).
Each track keeps a bounded pool of candidate crops (:mod:`runtime.video.select`); when the track ends
(unseen for ``track_timeout_s``) or has lasted ``max_track_s``, a few of them are described in batches
and their attributes voted (:mod:`runtime.video.vote`) into one :class:`TrackDescription`.

Example::

    from runtime import Describer
    from runtime.video import VideoDescriber, VideoOptions

    vd = VideoDescriber(Describer("bundle"), VideoOptions(camera="door"))
    for rgb, t, boxes in my_frames():  # boxes: {track_id: (x0, y0, x1, y1)}
        for track in vd.add_frame(rgb, t, boxes, channel_order="rgb"):
            print(track.track, track.text)
    for track in vd.finish():
        ...
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .select import Box, Candidate, CandidatePool, Quality, clip, occlusion, score, sharpness, touches_edge, upper_bound
from .vote import best_crop, vote

log = logging.getLogger(__name__)

DEFAULT_MODEL_SIZE = (256, 128)
MIN_CROP_PX = 8  # a box smaller than this (either side, inside the frame) is never a candidate
MAX_REMEMBERED = 100_000  # ended track ids remembered to notice their reuse


@dataclass(frozen=True)
class VideoOptions:
    """How tracks become descriptions.

    ``crops_per_track``: crops described per track (spread over its life); ``sample_fps``: how often a
    track's box is considered as a candidate (per second of video); ``pool_size``: candidates kept per
    track (its memory); ``track_timeout_s``: a track unseen this long has ended (a later box with its id
    starts a new track, named ``ID#2``); ``max_track_s``: a track that lasts longer is described and
    begun again under the same name (bounded memory on streams); ``min_frames``: tracks seen in fewer
    frames are dropped (tracker noise); ``flush_s``: ended tracks wait at most this long (video time)
    for a fuller batch.
    """

    camera: str = "default"
    crops_per_track: int = 3
    sample_fps: float = 5.0
    pool_size: int = 12
    track_timeout_s: float = 3.0
    max_track_s: float = 300.0
    min_frames: int = 3
    flush_s: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.camera, str) or not self.camera:
            raise ValueError(f"camera must be a non-empty string, got {self.camera!r}")
        for name in ("crops_per_track", "pool_size", "min_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sample_fps", "track_timeout_s", "max_track_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if self.pool_size < self.crops_per_track:
            raise ValueError(f"pool_size ({self.pool_size}) must be >= crops_per_track ({self.crops_per_track})")
        if not self.flush_s >= 0:
            raise ValueError(f"flush_s must be >= 0, got {self.flush_s!r}")


@dataclass(frozen=True)
class CropDescription:
    """One described crop of a track."""

    frame: int  # 0-based
    timestamp: float
    box: Box
    quality: Quality
    description: Any  # runtime.Description
    crop: np.ndarray = field(repr=False)  # RGB uint8


@dataclass(frozen=True)
class TrackDescription:
    """One track (or one ``max_track_s`` part of it): when it was seen, its crops, the vote and the kept text.

    ``attributes``: voted over the crops that were described; ``agreement``: per attribute, the share of
    those crops that agree with the vote; ``best``: the index in ``crops`` whose text is kept (empty, with
    ``error`` set, when no crop could be described).
    """

    camera: str
    track: str
    part: int  # 1, then 2, 3, ... for a track longer than max_track_s
    first_seen: float
    last_seen: float
    first_frame: int
    last_frame: int
    frames: int  # frames the track was seen in
    crops: tuple[CropDescription, ...]
    attributes: dict[str, Any]
    agreement: dict[str, float]
    best: int | None
    error: str | None = None

    @property
    def best_crop(self) -> CropDescription | None:
        """The crop whose text is kept."""
        return None if self.best is None else self.crops[self.best]

    @property
    def text(self) -> str:
        """The kept text ('' when no crop was described)."""
        best = self.best_crop
        return "" if best is None else best.description.text


@dataclass
class VideoStats:
    """Counts and seconds spent, for the summary line and benchmarks."""

    frames: int = 0
    boxes: int = 0
    outside: int = 0  # boxes with no area inside the frame, skipped
    tracks: int = 0  # described
    dropped: int = 0  # shorter than min_frames, or never a candidate
    reused: int = 0  # ids seen again after their track ended
    crops: int = 0
    failed_crops: int = 0
    crop_s: float = 0.0  # RGB conversion, cutting and measuring candidates
    describe_s: float = 0.0
    detect_s: float = 0.0
    track_s: float = 0.0


@dataclass
class _Track:
    name: str
    part: int
    first_seen: float
    first_frame: int
    pool: CandidatePool
    last_seen: float = 0.0
    last_frame: int = 0
    frames: int = 0
    last_slot: int = -1


class VideoDescriber:
    """Turn a stream of frames into one :class:`TrackDescription` per track (see the module's docstring).

    ``describer``: a :class:`runtime.Describer` (or anything with its ``describe(images, channel_order=)``
    and ``max_batch``). ``tracker``: links detections into tracks (:class:`runtime.video.tracker.ByteTracker`;
    needed for ``detections=`` and for the detector). ``detector``: finds boxes in frames given without
    any (:mod:`runtime.video.detector`). ``on_warning``: called with one line per problem in the input
    (a box outside the frame, an id reused after its track ended); default: ``logging.warning``.
    """

    def __init__(self, describer: Any, options: VideoOptions | None = None, *, tracker: Any = None,
                 detector: Callable[[np.ndarray], np.ndarray] | None = None,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.describer, self.options = describer, options or VideoOptions()
        self.tracker, self.detector = tracker, detector
        self.warn = on_warning or log.warning
        self.stats = VideoStats()
        pre = getattr(getattr(describer, "bundle", None), "preprocess", None) or {}
        self.model_size = (int(pre.get("height", DEFAULT_MODEL_SIZE[0])), int(pre.get("width", DEFAULT_MODEL_SIZE[1])))
        self._tracks: dict[str, _Track] = {}
        self._ended: dict[str, tuple[float, int]] = {}  # id -> (when its last track ended, lives so far)
        self._pending: list[_Track] = []
        self._pending_since: float | None = None
        self._frame_index = 0
        self._last_t = -math.inf
        self._origin: float | None = None  # the first frame's time: sampling slots count from it

    # ------------------------------------------------------------------ input

    def add_frame(self, frame: np.ndarray, timestamp: float, tracks: Mapping[Any, Sequence[float]] | None = None, *,
                  channel_order: str, detections: np.ndarray | None = None,
                  index: int | None = None) -> list[TrackDescription]:
        """Add one frame ((H, W, 3) uint8) seen at ``timestamp`` (epoch seconds, not decreasing); returns the
        tracks that ended and were described.

        ``tracks``: ``{track_id: (x0, y0, x1, y1)}`` from the caller's tracker; else ``detections``
        ((N, 5) ``x0, y0, x1, y1, score``) for this describer's tracker; else the detector runs.
        ``channel_order``: ``"rgb"`` or ``"bgr"`` (OpenCV). ``index``: the frame's number (default: counted).
        """
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        arr = np.asarray(frame)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {arr.dtype} {arr.shape}")
        rgb = arr if channel_order == "rgb" else np.ascontiguousarray(arr[..., ::-1])
        h, w = rgb.shape[:2]
        i = self._frame_index if index is None else int(index)
        if tracks is not None:
            ids = [str(k) for k in tracks]
            boxes = np.array([list(map(float, b)) for b in tracks.values()], np.float64).reshape(-1, 4)
            return self.observe(i, timestamp, w, h, lambda: rgb, ids, boxes)
        if detections is None:
            detections = self.detect(rgb)
        ids, boxes = self.link(detections)
        return self.observe(i, timestamp, w, h, lambda: rgb, ids, boxes)

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """Run the detector on one RGB frame -> (N, 5); ValueError without a detector."""
        from .detector import check_detections

        if self.detector is None:
            raise ValueError("a frame without tracks or detections needs a detector")
        t0 = time.perf_counter()
        out = check_detections(self.detector(rgb), "the detector")
        self.stats.detect_s += time.perf_counter() - t0
        return out

    def link(self, detections: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Link one frame's (N, 5) detections into tracks -> (track names, (M, 4) boxes)."""
        if self.tracker is None:
            raise ValueError("detections without track ids need a tracker (runtime.video.tracker.ByteTracker)")
        t0 = time.perf_counter()
        tids, boxes, _ = self.tracker.update(np.asarray(detections, np.float64).reshape(-1, 5))
        self.stats.track_s += time.perf_counter() - t0
        return [str(t) for t in tids], boxes

    def observe(self, index: int, timestamp: float, width: int, height: int, rgb: Callable[[], np.ndarray],
                ids: Sequence[str], boxes: np.ndarray, where: Sequence[str] | None = None) -> list[TrackDescription]:
        """The core step: one frame's tracked boxes. ``rgb`` returns the frame's pixels and is called only when
        a crop is needed; ``where`` names each box's source for warnings (``tracks.txt:12``)."""
        t = float(timestamp)
        if not math.isfinite(t):
            raise ValueError(f"frame {index}: timestamp must be finite, got {timestamp!r}")
        if t < self._last_t:
            raise ValueError(f"frame {index}: timestamp {t} is before the previous frame's ({self._last_t})")
        self._last_t = t
        if self._origin is None:
            self._origin = t
        self._frame_index = index + 1
        self.stats.frames += 1
        self._end_tracks(t)
        kept: list[tuple[str, Box, float, int]] = []
        for k, (name, box) in enumerate(zip(ids, np.asarray(boxes, np.float64).reshape(-1, 4))):
            self.stats.boxes += 1
            hit = clip(box, width, height) if np.isfinite(box).all() else None
            if hit is None:
                self._outside(name, index, box, width, height, where[k] if where else None)
                continue
            kept.append((name, hit[0], hit[1], k))
        covered = occlusion(np.array([b for _, b, _, _ in kept]).reshape(-1, 4))
        frame_rgb: np.ndarray | None = None
        for (name, box, visible, k), occ in zip(kept, covered):
            track = self._track(name, index, t, where[k] if where else None)
            track.last_seen, track.last_frame = t, index
            track.frames += 1
            # every track samples in the same time slots, so that few frames need converting to RGB
            slot = math.floor((t - self._origin) * self.options.sample_fps + 1e-6)
            if slot == track.last_slot:
                continue
            track.last_slot = slot
            x0, y0, x1, y1 = (int(math.floor(box[0])), int(math.floor(box[1])), int(math.ceil(box[2])),
                              int(math.ceil(box[3])))
            if x1 - x0 < MIN_CROP_PX or y1 - y0 < MIN_CROP_PX:
                continue
            size = (y1 - y0) / self.model_size[0]
            edge = touches_edge(box, width, height)
            if not track.pool.wants(t, upper_bound(size, visible, float(occ), edge)):
                continue
            c0 = time.perf_counter()
            if frame_rgb is None:
                frame_rgb = rgb()
            crop = np.ascontiguousarray(frame_rgb[y0:y1, x0:x1])
            sharp = sharpness(crop, self.model_size)
            q = Quality(size, sharp, visible, float(occ), edge, score(size, sharp, visible, float(occ), edge))
            track.pool.offer(Candidate(index, t, (float(x0), float(y0), float(x1), float(y1)), crop, q))
            self.stats.crop_s += time.perf_counter() - c0
        return self._flush_if_due(t)

    def finish(self) -> list[TrackDescription]:
        """End every track in flight and describe what is pending (at the end of the video, or when stopping)."""
        for track in list(self._tracks.values()):
            self._end(track)
        self._tracks.clear()
        return self._describe()

    # ------------------------------------------------------------------ tracks

    def _track(self, name: str, index: int, t: float, where: str | None) -> _Track:
        track = self._tracks.get(name)
        if track is not None and t - track.first_seen > self.options.max_track_s:
            self._end(track)
            track = self._tracks[name] = self._new(track.name, track.part + 1, index, t)
        if track is None:
            label = name
            ended = self._ended.get(name)
            if ended is not None:
                lives = ended[1] + 1
                self._ended[name] = (ended[0], lives)
                label = f"{name}#{lives}"
                self.stats.reused += 1
                src = f"{where}: " if where else ""
                self.warn(f"{src}track {name} reappears at frame {index + 1}, {t - ended[0]:.1f} s after it ended "
                          f"(unseen for more than {self.options.track_timeout_s:g} s); described as track {label}")
            track = self._tracks[name] = self._new(label, 1, index, t)
        return track

    def _new(self, label: str, part: int, index: int, t: float) -> _Track:
        o = self.options
        return _Track(label, part, t, index, CandidatePool(o.pool_size, max(1.0 / o.sample_fps, 0.5)))

    def _outside(self, name: str, index: int, box: np.ndarray, width: int, height: int, where: str | None) -> None:
        self.stats.outside += 1
        if self.stats.outside == 1:
            src = f"{where}: " if where else ""
            shown = ", ".join(f"{v:g}" for v in box)
            self.warn(f"{src}box of track {name} in frame {index + 1} ({shown}) has no area inside the "
                      f"{width}x{height} frame; skipped (later ones are counted in the summary)")

    def _end_tracks(self, t: float) -> None:
        gone = [n for n, tr in self._tracks.items() if t - tr.last_seen > self.options.track_timeout_s]
        for name in gone:
            self._end(self._tracks.pop(name))
        if len(self._ended) > MAX_REMEMBERED:  # bounded memory on endless streams: forget the oldest ids
            keep = sorted(self._ended.items(), key=lambda kv: kv[1][0])[-MAX_REMEMBERED // 2:]
            self._ended = dict(keep)

    def _end(self, track: _Track) -> None:
        key = track.name.split("#", 1)[0]
        lives = self._ended.get(key, (0.0, 1))[1]
        self._ended[key] = (track.last_seen, lives)
        if track.frames < self.options.min_frames or not len(track.pool):
            self.stats.dropped += 1
            return
        if self._pending_since is None:
            self._pending_since = track.last_seen
        self._pending.append(track)

    def _flush_if_due(self, t: float) -> list[TrackDescription]:
        if not self._pending:
            return []
        n = sum(min(len(tr.pool), self.options.crops_per_track) for tr in self._pending)
        max_batch = int(getattr(self.describer, "max_batch", 8))
        if n >= max_batch or t - (self._pending_since or t) >= self.options.flush_s:
            return self._describe()
        return []

    # ------------------------------------------------------------------ describing

    def _describe(self) -> list[TrackDescription]:
        tracks, self._pending, self._pending_since = self._pending, [], None
        if not tracks:
            return []
        chosen = [tr.pool.choose(self.options.crops_per_track) for tr in tracks]
        flat = [c for cs in chosen for c in cs]
        t0 = time.perf_counter()
        results = self.describer.describe([c.crop for c in flat], channel_order="rgb")
        self.stats.describe_s += time.perf_counter() - t0
        out, k = [], 0
        for tr, cs in zip(tracks, chosen):
            crops = tuple(CropDescription(c.frame, c.timestamp, c.box, c.quality, results[k + j], c.crop)
                          for j, c in enumerate(cs))
            k += len(cs)
            out.append(self._track_description(tr, crops))
        return out

    def _track_description(self, tr: _Track, crops: tuple[CropDescription, ...]) -> TrackDescription:
        ok = [i for i, c in enumerate(crops) if c.description.error is None]
        self.stats.tracks += 1
        self.stats.crops += len(crops)
        self.stats.failed_crops += len(crops) - len(ok)
        base = dict(camera=self.options.camera, track=tr.name, part=tr.part, first_seen=tr.first_seen,
                    last_seen=tr.last_seen, first_frame=tr.first_frame, last_frame=tr.last_frame, frames=tr.frames,
                    crops=crops)
        if not ok:
            from ..attribute_schema import empty_attributes

            error = crops[0].description.error if crops else "no crop"
            return TrackDescription(**base, attributes=empty_attributes(), agreement={}, best=None,
                                    error=f"no crop of track {tr.name} could be described: {error}")
        attrs = [crops[i].description.attributes for i in ok]
        weights = [crops[i].quality.score for i in ok]
        voted, agreement = vote(attrs, weights)
        best = ok[best_crop(attrs, voted, weights)]
        return TrackDescription(**base, attributes=voted, agreement=agreement, best=best)

    @property
    def tracks_in_flight(self) -> int:
        """Tracks seen and not yet ended."""
        return len(self._tracks)


__all__ = ["CropDescription", "TrackDescription", "VideoDescriber", "VideoOptions", "VideoStats"]
