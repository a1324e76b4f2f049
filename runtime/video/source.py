"""Decoding a video file or stream with PyAV: frames with their time stamps, damage reported with what came before.

A frame's time stamp is its presentation time in the stream's time base, counted from the first frame,
plus the start time: ``--start``, else the container's ``creation_time``, else (a network stream) the
clock when the first frame arrived, else 0 (1970-01-01T00:00:00Z, with a warning).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
MIN_START, MAX_START = 0.0, 4_102_444_800.0  # 1970-01-01 .. 2100-01-01 (the description store's window)
# A file whose last frame comes this much before its header's duration (plus two frame intervals) was cut short.
TRUNCATION_SLACK_S = 0.5
READ_TIMEOUT_S = 15.0


class VideoError(ValueError):
    """A video that cannot be read at all (the message names it)."""


class VideoDamaged(VideoError):
    """Decoding stopped at damage: ``frames`` frames (up to ``seconds`` of video) came before it."""

    def __init__(self, message: str, frames: int, seconds: float | None) -> None:
        super().__init__(message)
        self.frames, self.seconds = frames, seconds


def parse_start(text: str) -> float:
    """``--start``: ISO 8601 (naive means UTC, ``Z`` accepted) or seconds since the epoch -> epoch seconds."""
    value = text.strip()
    try:
        ts = float(value)
    except ValueError:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"--start: expected an ISO 8601 time such as 2024-05-01T12:00:00Z, got {text!r}") \
                from None
        ts = (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    if not (math.isfinite(ts) and MIN_START <= ts < MAX_START):
        raise ValueError(f"--start: {text!r} is outside 1970-01-01..2100-01-01")
    return ts


def is_network(url: str) -> bool:
    """Whether ``url`` names a network stream rather than a file."""
    return url.lower().startswith(NETWORK_SCHEMES)


@dataclass
class DecodedFrame:
    """One decoded frame; its RGB pixels are converted on first use (most frames never need them)."""

    index: int  # 0-based, in presentation order
    timestamp: float  # epoch seconds
    width: int
    height: int
    _frame: Any = field(repr=False)
    _rgb: np.ndarray | None = field(default=None, repr=False)

    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        if self._rgb is None:
            self._rgb = self._frame.to_ndarray(format="rgb24")
            self._frame = None
        return self._rgb


def _creation_time(container: Any, stream: Any) -> float | None:
    for meta in (container.metadata, stream.metadata):
        text = (meta or {}).get("creation_time")
        if not text:
            continue
        try:
            ts = parse_start(text)
        except ValueError:
            continue
        if ts > 86400:  # muxers write 1970-01-01 (or 1904, refused above) when they do not know
            return ts
    return None


def _cause(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


class VideoSource:
    """A video opened for decoding. ``start``: epoch seconds of the first frame (overrides the container's
    creation time). ``threads``: decoder threads (0: FFmpeg's choice). Use as a context manager."""

    def __init__(self, url: str | os.PathLike, *, start: float | None = None, threads: int = 0,
                 timeout_s: float = READ_TIMEOUT_S) -> None:
        import av

        self.url = os.fspath(url)
        self._reader: ReadAhead | None = None
        self.network = is_network(self.url)
        if not self.network and not os.path.exists(self.url):
            raise VideoError(f"{self.url}: no such file")
        if not self.network and os.path.isdir(self.url):
            raise VideoError(f"{self.url}: is a directory, not a video")
        options = {"rtsp_transport": "tcp"} if self.url.lower().startswith("rtsp") else {}
        try:
            self._container = av.open(self.url, options=options, timeout=(timeout_s, timeout_s) if self.network
                                      else None)
        except (av.error.FFmpegError, OSError) as e:
            raise VideoError(f"{self.url}: cannot read: {_cause(e)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{self.url}: no video stream")
        self._stream = s = self._container.streams.video[0]
        s.thread_type = "AUTO"
        s.thread_count = threads
        rate = s.average_rate or s.guessed_rate or s.base_rate
        self.fps = float(rate) if rate else 25.0
        self.width, self.height = int(s.codec_context.width), int(s.codec_context.height)
        self.frame_count = int(s.frames) if s.frames else None
        d = self._container.duration
        self.duration_s = d / 1_000_000 if d and not self.network else None
        created = _creation_time(self._container, s)
        if start is not None:
            self.start, self.start_from = start, "--start"
        elif created is not None:
            self.start, self.start_from = created, "creation_time"
        elif self.network:
            self.start, self.start_from = None, "clock"  # set when the first frame arrives
        else:
            self.start, self.start_from = 0.0, "none"
            log.warning("%s: no --start and no creation time in the file: time stamps count from "
                        "1970-01-01T00:00:00Z (pass --start)", self.url)

    def frames(self) -> Iterator[DecodedFrame]:
        """Decoded frames in order; :class:`VideoDamaged` when the file is damaged or cut short (after the
        frames before the damage). A packet that fails to decode is skipped with a warning."""
        import av

        s, n, first, last_t = self._stream, 0, None, None
        bad_packets, went_back = 0, False
        packets = self._container.demux(s)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as e:
                raise self._damaged(n, last_t, _cause(e)) from None
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as e:
                bad_packets += 1
                if bad_packets == 1:
                    log.warning("%s: a packet after frame %d could not be decoded (%s); skipped", self.url, n,
                                _cause(e))
                continue
            for frame in decoded:
                t = frame.time
                rel = n / self.fps if t is None else float(t)
                if first is None:
                    first = rel
                    if self.start is None:
                        self.start = time.time()
                rel -= first
                if last_t is not None and rel <= last_t:  # a stream's clock that went back (a camera restart)
                    if not went_back:
                        log.warning("%s: time stamps went back at frame %d; counted on from the frame before",
                                    self.url, n + 1)
                    went_back = True
                    rel = last_t + 1.0 / self.fps
                last_t = rel
                yield DecodedFrame(n, self.start + rel, frame.width, frame.height, frame)
                n += 1
        if bad_packets > 1:
            log.warning("%s: %d packets could not be decoded", self.url, bad_packets)
        if n == 0:
            raise VideoDamaged(f"{self.url}: no frame could be decoded", 0, None)
        if self.duration_s is not None and last_t is not None:
            expected_end = self.duration_s - 2.0 / self.fps - TRUNCATION_SLACK_S
            if last_t < expected_end:
                raise self._damaged(n, last_t, f"it ends at {last_t:.2f} s but its header says "
                                               f"{self.duration_s:.2f} s (truncated?)")

    def _damaged(self, n: int, last_t: float | None, cause: str) -> VideoDamaged:
        at = f"{last_t:.2f} s" if last_t is not None else "the start"
        return VideoDamaged(f"{self.url}: damaged or truncated after frame {n} ({at}): {cause}", n, last_t)

    def read_ahead(self, size: int = 8) -> ReadAhead:
        """Decode in a background thread, up to ``size`` frames ahead of the caller (see :class:`ReadAhead`)."""
        if self._reader is not None:
            raise RuntimeError("the video is already being read")
        self._reader = ReadAhead(self.frames(), size)
        return self._reader

    def close(self) -> None:
        """Close the container (left to the process's exit while a reader thread is still blocked in it)."""
        if self._reader is not None and not self._reader.stop():
            log.debug("%s: the decoding thread is still blocked; the container is left open", self.url)
            return
        self._container.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReadAhead:
    """Frames decoded by a daemon thread into a bounded queue, so that decoding overlaps describing and a
    reader blocked on a stream never blocks the caller: :meth:`get` waits at most ``timeout`` seconds."""

    _END = object()

    def __init__(self, frames: Iterator[DecodedFrame], size: int = 8) -> None:
        self._frames = frames
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, size))
        self._cancel = threading.Event()
        self.decode_s = 0.0  # seconds the thread spent decoding
        self._thread = threading.Thread(target=self._run, name="pvlm-video-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._cancel.is_set():
                t0 = time.perf_counter()
                try:
                    item: Any = next(self._frames)
                except StopIteration:
                    item = self._END
                except BaseException as e:  # handed to the caller, raised there
                    item = e
                self.decode_s += time.perf_counter() - t0
                while not self._cancel.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if item is self._END or isinstance(item, BaseException):
                    return
        finally:
            self._frames.close()

    def get(self, timeout: float = 0.1) -> DecodedFrame | None:
        """The next frame; None when none came within ``timeout``; StopIteration at the end; the decoder's
        error (:class:`VideoDamaged`) where it happened."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is self._END:
            self._queue.put(item)  # later calls see the end too
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(self._END)
            raise item
        return item

    def stop(self, wait_s: float = 1.0) -> bool:
        """Ask the thread to stop; whether it has (False: it is blocked reading, e.g. on a silent stream)."""
        self._cancel.set()
        self._thread.join(wait_s)
        return not self._thread.is_alive()


__all__ = ["DecodedFrame", "ReadAhead", "VideoDamaged", "VideoError", "VideoSource", "is_network", "parse_start"]
