"""``pvlm-video VIDEO --bundle BUNDLE``: one description per person in a video, from its tracks or a detector."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from ..backends import NAMES
from ..cli_common import (
    CONTEXT_SETTINGS,
    Command,
    CommandError,
    CommandFailure,
    MissingPackage,
    common_options,
    echo_error,
    first_line,
    writing,
)

_PACKAGES = {"av": "PyAV", "supervision": "supervision", "scipy": "SciPy"}
_INSTALL = "pip install 'personvlm-toolkit[video]'"


class _Stop:
    """SIGINT/SIGTERM while decoding: the first one stops reading frames (the tracks in flight are still
    described and the output completed); a second one interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Stop]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


@contextlib.contextmanager
def _output(out: str | None) -> Iterator[tuple[IO[str], str]]:
    """The lines' destination: ``out`` written atomically (appears whole when the block ends), or stdout."""
    from ..atomic import atomic_path

    if out is None:
        yield sys.stdout, "stdout"
        return
    with writing(out), atomic_path(out) as tmp, open(tmp, "x", encoding="utf-8") as fh:
        yield fh, out


def _missing(e: ModuleNotFoundError) -> MissingPackage | None:
    what = _PACKAGES.get((e.name or "").split(".")[0])
    return None if what is None else MissingPackage(f"this command needs {what}: {_INSTALL}")


@click.command(cls=Command, context_settings=CONTEXT_SETTINGS)
@click.argument("video")
@click.option("--bundle", required=True, type=click.Path(), help="Exported bundle directory.")
@click.option("--tracks", "tracks_file", type=click.Path(dir_okay=False),
              help="MOTChallenge file (frame,id,x,y,w,h,conf,...): the tracker's output, or detections with id -1 "
                   "(linked by ByteTrack). Default: the --detector finds people.")
@click.option("--camera", default="default", help="Camera id of every line.")
@click.option("--start", help="Time of the first frame (ISO 8601; naive means UTC). Default: the file's creation "
                              "time, the clock for a stream.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="JSON lines file, written atomically. Default: stdout, as tracks end.")
@click.option("--thumbs", type=click.Path(file_okay=False), help="Save each track's kept crop as DIR/CAMERA_TRACK.jpg.")
@click.option("--index", "index_db", help="Also store the tracks in this description store (SQLite file or "
                                          "postgresql:// URL), as pvlm-index would.")
@click.option("--per-crop", is_flag=True, help="Also write one line per described crop.")
@click.option("--detector", default="background",
              help="Without --tracks: 'background' (fixed cameras) or MODULE:NAME, a Python detector of your own "
                   "(docs/video.md).")
@click.option("--crops-per-track", type=click.IntRange(1, 32), default=3, help="Crops described per track.")
@click.option("--sample-fps", type=click.FloatRange(min=0.01), default=5.0,
              help="Candidate crops considered per track and second.")
@click.option("--track-timeout", type=click.FloatRange(min=0.01), default=3.0,
              help="Seconds unseen after which a track has ended.")
@click.option("--max-track-seconds", type=click.FloatRange(min=1.0), default=300.0,
              help="A longer track is described and begun again (bounded memory).")
@click.option("--min-frames", type=click.IntRange(min=1), default=3, help="Drop tracks seen in fewer frames.")
@click.option("--backend", type=click.Choice(NAMES), default="auto", help="Runtime backend.")
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads of the model.")
@click.option("--batch-size", "max_batch", type=click.IntRange(min=1), help="Crops per batch (default: the bundle's).")
@common_options()
def main(video: str, bundle: str, tracks_file: str | None, camera: str, start: str | None, out: str | None,
         thumbs: str | None, index_db: str | None, per_crop: bool, detector: str, crops_per_track: int,
         sample_fps: float, track_timeout: float, max_track_seconds: float, min_frames: int, backend: str,
         threads: int | None, max_batch: int | None, quiet: bool) -> None:
    """Describe each person in VIDEO once: pick a few good crops of each track, describe them with BUNDLE,
    vote their attributes, and write one JSON line per track (pvlm-index reads them as they are).

    VIDEO is a file FFmpeg reads or an rtsp://, http(s):// stream. Ctrl-C or SIGTERM stops reading,
    describes the tracks in flight and completes the output.

    \b
    Exit status: 0 done; 2 bad input (options, tracks file, an unreadable, damaged or truncated video:
    what came before the damage is written); 1 the store or the model failed; 130/143 stopped by
    SIGINT/SIGTERM (the output is complete up to there).
    """
    try:
        _run(**locals())
    except ModuleNotFoundError as e:
        raise (_missing(e) or e) from None
    except ImportError as e:  # an installed package too old or too new (ByteTracker says which)
        raise MissingPackage(first_line(e)) from None


def _run(video: str, bundle: str, tracks_file: str | None, camera: str, start: str | None, out: str | None,
         thumbs: str | None, index_db: str | None, per_crop: bool, detector: str, crops_per_track: int,
         sample_fps: float, track_timeout: float, max_track_seconds: float, min_frames: int, backend: str,
         threads: int | None, max_batch: int | None, quiet: bool) -> None:
    from ..search.records import MAX_ID_CHARS, StoreError, check_string
    from .pipeline import VideoOptions
    from .source import VideoError, VideoSource, parse_start
    from .tracks import TracksError, read_tracks

    try:
        check_string(camera, "--camera", MAX_ID_CHARS)
        start_ts = None if start is None else parse_start(start)
        options = VideoOptions(camera=camera, crops_per_track=crops_per_track, sample_fps=sample_fps,
                               pool_size=max(12, crops_per_track), track_timeout_s=track_timeout,
                               max_track_s=max_track_seconds, min_frames=min_frames)
        tracks = None if tracks_file is None else read_tracks(tracks_file)
    except (StoreError, TracksError, ValueError) as e:
        raise CommandError(first_line(e)) from None
    try:
        source = VideoSource(video, start=start_ts)
    except VideoError as e:
        raise CommandError(first_line(e)) from None
    with source:
        det = None
        if tracks is None:
            from .detector import load_detector

            try:
                det = load_detector(detector, fps=source.fps)
            except ValueError as e:
                raise CommandError(first_line(e)) from None
        describer = _describer(bundle, backend, threads, max_batch)
        with describer:
            store = _open_store(index_db) if index_db else None
            try:
                _describe_video(source, describer, tracks, det, options, bundle=bundle, out=out, thumbs=thumbs,
                                store=store, index_db=index_db, per_crop=per_crop, quiet=quiet)
            finally:
                if store is not None:
                    store.close()


def _describer(bundle: str, backend: str, threads: int | None, max_batch: int | None) -> Any:
    from ..backends import BackendUnavailable
    from ..bundle import BundleError
    from ..describer import Describer

    try:
        return Describer(bundle, backend=backend, threads=threads, max_batch=max_batch)
    except (BundleError, BackendUnavailable, ValueError, FileNotFoundError) as e:
        raise CommandError(first_line(e)) from None


def _open_store(location: str) -> Any:
    from ..search import StoreError, StoreUnavailable, open_store

    try:
        return open_store(location)
    except StoreUnavailable as e:
        raise CommandFailure(first_line(e)) from None
    except (StoreError, ImportError) as e:
        raise CommandError(first_line(e)) from None


class _Sink:
    """Where finished tracks go: lines, thumbnails, the store."""

    def __init__(self, fh: IO[str], target: str, *, video: str, bundle_id: str, backend: str, per_crop: bool,
                 thumbs: str | None, store: Any) -> None:
        self.fh, self.target, self.video, self.bundle_id, self.backend = fh, target, video, bundle_id, backend
        self.per_crop, self.thumbs, self.store = per_crop, thumbs, store
        self.tracks = self.failed = self.indexed = 0
        self.store_error: str | None = None
        if thumbs:
            with writing(thumbs):
                Path(thumbs).mkdir(parents=True, exist_ok=True)

    def emit(self, done: list[Any]) -> None:
        from .output import crop_line, store_record, track_line, write_thumb

        if not done:
            return
        lines, records = [], []
        for td in done:
            self.tracks += 1
            if td.error:
                self.failed += 1
                echo_error(td.error)
            thumb = None
            if self.thumbs and td.best_crop is not None:
                with writing(self.thumbs):
                    thumb = str(write_thumb(self.thumbs, td))
            lines.append(json.dumps(track_line(td, video=self.video, bundle=self.bundle_id, backend=self.backend,
                                               thumb=thumb)))
            if self.per_crop:
                lines += [json.dumps(crop_line(td, c, video=self.video, bundle=self.bundle_id, backend=self.backend))
                          for c in td.crops]
            rec = store_record(td, self.bundle_id)
            if rec is not None:
                records.append(rec)
        with writing(self.target, self.fh if self.fh is sys.stdout else None):
            self.fh.write("".join(line + "\n" for line in lines))
            self.fh.flush()
        if self.store is not None and records and self.store_error is None:
            self._index(records)

    def _index(self, records: list[Any]) -> None:
        from ..search import StoreError

        try:
            self.indexed += self.store.add(records)
        except StoreError as e:  # keep describing: the lines still reach the output
            self.store_error = first_line(e)
            echo_error(f"{self.store_error}; no more tracks will be indexed (the output has them all)")


@dataclass
class _Outcome:
    """How the frame loop ended: the last frame described, time spent waiting for frames, and what stopped it."""

    last_index: int = -1
    wait_s: float = 0.0
    damaged: Any = None  # a VideoDamaged: the video could not be read past it
    failure: str | None = None  # the user's detector returned something unusable


def _describe_video(source: Any, describer: Any, tracks: Any, det: Any, options: Any, *, bundle: str,
                    out: str | None, thumbs: str | None, store: Any, index_db: str | None, per_crop: bool,
                    quiet: bool) -> None:
    from tqdm import tqdm

    from ..description_schema import bundle_id
    from .pipeline import VideoDescriber

    tracker = None
    if tracks is None or not tracks.tracked:
        from .tracker import ByteTracker

        tracker = ByteTracker(source.fps)

    bar = tqdm(total=source.frame_count, desc="pvlm-video", unit="frame", file=sys.stderr, leave=False,
               disable=quiet or not sys.stderr.isatty())

    def warn(message: str) -> None:
        if not quiet:
            bar.clear()
            click.echo(f"warning: {message}", err=True)

    vd = VideoDescriber(describer, options, tracker=tracker, detector=det, on_warning=warn)
    stop = _Stop()
    t_start = time.perf_counter()
    with stop.installed(), _output(out) as (fh, target):
        sink = _Sink(fh, target, video=source.url, bundle_id=bundle_id(bundle), backend=describer.backend_name,
                     per_crop=per_crop, thumbs=thumbs, store=store)
        reader = source.read_ahead()
        outcome = _frame_loop(reader, vd, tracks, sink, bar, stop)
        sink.emit(vd.finish())
        bar.close()
    ended = outcome.damaged is None and outcome.failure is None and stop.signum is None
    if tracks is not None and ended and tracks.last_frame > outcome.last_index + 1:
        warn(f"{tracks.path}: boxes up to frame {tracks.last_frame}, but the video ended at frame "
             f"{outcome.last_index + 1}")
    if not quiet:
        _summary(vd.stats, sink, source, time.perf_counter() - t_start, reader.decode_s, outcome.wait_s, out)
    _finish(outcome, sink, stop, index_db)


def _frame_loop(reader: Any, vd: Any, tracks: Any, sink: Any, bar: Any, stop: Any) -> _Outcome:
    """Describe frames as the decoding thread delivers them, until the video ends, breaks or a signal stops it."""
    from .source import VideoDamaged

    outcome = _Outcome()
    while stop.signum is None:
        t0 = time.perf_counter()
        try:
            frame = reader.get(timeout=0.1)
        except StopIteration:
            break
        except VideoDamaged as e:
            outcome.damaged = e
            break
        finally:
            outcome.wait_s += time.perf_counter() - t0
        if frame is None:  # nothing yet (a slow stream): look at the stop flag again
            continue
        try:
            done = _step(vd, frame, tracks)
        except ValueError as e:  # the user's detector returned something unusable
            outcome.failure = f"frame {frame.index + 1}: {first_line(e)}"
            break
        outcome.last_index = frame.index
        sink.emit(done)
        bar.update()
        if frame.index % 25 == 0:
            bar.set_postfix(tracks=vd.tracks_in_flight, described=sink.tracks, refresh=False)
    return outcome


def _finish(outcome: _Outcome, sink: Any, stop: Any, index_db: str | None) -> None:
    """One line and a non-zero exit for whatever stopped the video early (the output is complete up to it)."""
    done = outcome.last_index + 1
    if outcome.damaged is not None:
        raise CommandError(f"{outcome.damaged}; the {outcome.damaged.frames} frames before it were described")
    if outcome.failure is not None:
        raise CommandError(f"{outcome.failure}; the {done} frames before it were described")
    if sink.store_error is not None:
        raise CommandFailure(f"store {index_db}: {sink.indexed} track(s) indexed before it failed")
    if stop.signum is not None:
        name = "SIGINT" if stop.signum == signal.SIGINT else "SIGTERM"
        click.echo(f"stopped by {name} after frame {done}: the tracks in flight were described and the "
                   "output is complete up to there", err=True)
        sys.exit(128 + stop.signum)


def _step(vd: Any, frame: Any, tracks: Any) -> list[Any]:
    """One decoded frame through the describer: boxes from the tracks file (linked by ByteTrack when they
    have no ids) or from the detector."""
    if tracks is None:
        ids, boxes = vd.link(vd.detect(frame.rgb()))
        return vd.observe(frame.index, frame.timestamp, frame.width, frame.height, frame.rgb, ids, boxes)
    fb = tracks.at(frame.index + 1)
    if tracks.tracked:
        where = [f"{tracks.path}:{n}" for n in fb.lines]
        return vd.observe(frame.index, frame.timestamp, frame.width, frame.height, frame.rgb,
                          [str(i) for i in fb.ids], fb.boxes, where)
    import numpy as np

    ids, boxes = vd.link(np.hstack([fb.boxes, fb.scores[:, None]]))
    return vd.observe(frame.index, frame.timestamp, frame.width, frame.height, frame.rgb, ids, boxes)


def _summary(stats: Any, sink: _Sink, source: Any, total: float, decode_s: float, wait_s: float,
             out: str | None) -> None:
    # decoding runs in its own thread, beside the rest: its share overlaps the others
    shares = {"crops": stats.crop_s, "describe": stats.describe_s}
    if stats.detect_s:
        shares["detect"] = stats.detect_s
    if stats.track_s:
        shares["track"] = stats.track_s
    shares["waiting for frames"] = wait_s
    shares["other"] = max(0.0, total - sum(shares.values()))
    share_text = ", ".join(f"{k} {v / total:.0%}" for k, v in {"decode (thread)": decode_s, **shares}.items()) \
        if total > 0 else ""
    video_s = stats.frames / source.fps if source.fps else 0.0
    speed = f"{stats.frames / total:.1f} frames/s, {video_s / total:.1f}x real time" if total > 0 else ""
    notes = []
    if stats.dropped:
        notes.append(f"{stats.dropped} short track(s) dropped")
    if stats.outside:
        notes.append(f"{stats.outside} box(es) outside the frame skipped")
    if stats.reused:
        notes.append(f"{stats.reused} reused track id(s) described as new tracks")
    if sink.store is not None:
        notes.append(f"{sink.indexed} new in the store")
    where = f" -> {out}" if out else ""
    note = f"; {'; '.join(notes)}" if notes else ""
    click.echo(f"described {sink.tracks} track(s) ({stats.crops} crops) from {stats.frames} frames in {total:.1f} s "
               f"({speed}; {share_text}){where}{note}", err=True)


__all__ = ["main"]
