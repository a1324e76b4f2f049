"""``pvlm-video`` on a synthetic H.264 video with known people (tests/video_fixture.py), end to end.

The tiny random test bundle checks the mechanics (one record per person, time spans, outputs, faults);
the oracle describer (it names the person by their clothes' colours) checks that the records are the
right people's and that pvlm-search finds them.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("av")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402
from video_fixture import OracleDescriber, cached_video  # noqa: E402

from runtime.search.cli import index_main, search_main  # noqa: E402
from runtime.video.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SLACK = 0.21  # seconds: ByteTrack confirms a track on its second detection


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return cached_video(tmp_path_factory.getbasetemp())


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def tracks_of(path) -> list[dict]:
    return [r for r in lines(path) if r["kind"] == "track"]


def error_lines(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("error:")]


def test_one_record_per_person(video, tiny_bundle, tmp_path):
    out, thumbs, db = tmp_path / "described.jsonl", tmp_path / "thumbs", tmp_path / "store.db"
    res = run(video.path, "--bundle", tiny_bundle, "--tracks", video.gt, "--camera", "gate", "--out", out,
              "--thumbs", thumbs, "--index", db, "--per-crop")
    assert res.exit_code == 0, res.output
    recs = tracks_of(out)
    assert sorted(r["track"] for r in recs) == sorted(str(w.track) for w in video.walkers)
    for r in recs:
        w = video.walker(r["track"])
        assert r["camera"] == "gate" and r["error"] is None and len(r["bundle_id"]) == 16
        assert r["first_seen"] == pytest.approx(video.time_of(w.first_frame), abs=1e-3)
        assert r["last_seen"] == pytest.approx(video.time_of(w.last_frame), abs=1e-3)
        assert r["first_seen"] <= r["timestamp"] <= r["last_seen"] and r["frames"] == len(w.boxes)
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 <= video.width and 0 <= y0 < y1 <= video.height
        assert r["crops"] == 3 and set(r["agreement"]) == set(r["attributes"])
        assert Path(r["thumb"]).read_bytes()[:2] == b"\xff\xd8" and Path(r["thumb"]).name == f"gate_{r['track']}.jpg"
    crops = [r for r in lines(out) if r["kind"] == "crop"]
    assert len(crops) == 3 * len(recs) and all(0 <= c["quality"]["score"] <= 1 for c in crops)
    # the choice, measured: sharp crops wholly in the frame, though 30% of frames are blurred and people enter
    blurred = sum(c["frame"] in video.walker(c["track"]).blurred for c in crops)
    assert blurred / len(crops) < 0.15 and all(c["quality"]["visible"] == 1.0 for c in crops)
    assert "described 5 track(s) (15 crops) from 60 frames" in res.stderr and "x real time" in res.stderr
    with sqlite3.connect(db) as con:
        stored = sorted(con.execute("SELECT camera, track, ts FROM descriptions"))
    assert stored == sorted(("gate", r["track"], r["timestamp"]) for r in recs)
    # pvlm-index reads the lines as they are (the track line wins over its best crop's line: same time)
    res = CliRunner().invoke(index_main, ["--db", str(tmp_path / "again.db"), str(out)])
    assert res.exit_code == 0, res.output
    assert f"indexed {len(lines(out)) - len(recs)} new description(s) ({len(recs)} already stored" in res.stderr


def test_records_are_the_right_people_and_searchable(video, tiny_bundle, tmp_path, monkeypatch):
    import runtime.describer as describer_module

    real = describer_module.Describer
    monkeypatch.setattr(describer_module, "Describer", lambda *a, **kw: OracleDescriber(video, real(*a, **kw)))
    db = tmp_path / "store.db"
    res = run(video.path, "--bundle", tiny_bundle, "--tracks", video.gt, "--camera", "gate", "--out",
              tmp_path / "o.jsonl", "--index", db)
    assert res.exit_code == 0, res.output
    recs = {r["track"]: r for r in tracks_of(tmp_path / "o.jsonl")}
    for w in video.walkers:
        got = recs[str(w.track)]["attributes"]
        for key in ("upper", "upper_color", "lower", "lower_color", "view"):
            assert got[key] == w.attributes[key], (w.track, key)
        query = f"{w.attributes['upper_color']} {w.attributes['upper']} and {w.attributes['lower_color']} " \
                f"{w.attributes['lower']}"
        found = CliRunner().invoke(search_main, ["--db", str(db), "--json", query])
        assert found.exit_code == 0, found.output
        hits = [json.loads(line) for line in found.stdout.splitlines()]
        assert hits[0]["track"] == str(w.track) and hits[0]["camera"] == "gate", query


def test_track_level_accuracy_measured(video, tiny_bundle):
    import video_measure

    from runtime.describer import Describer

    with Describer(tiny_bundle, backend="onnxruntime-cpu") as d:
        tiny = video_measure.attribute_report(video, d)
        oracle = video_measure.attribute_report(video, OracleDescriber(video, d))
    for report in (tiny, oracle):
        assert report["track_records"] == len(video.walkers) == report["track_level"]["n"]
        assert report["chosen_crops"]["n"] == 3 * len(video.walkers) and report["crop_level"]["n"] > 60
        assert 0.0 <= report["track_level"]["mean"] <= 1.0
    print(json.dumps({"tiny": tiny, "oracle": oracle}))
    # the oracle is a model whose crop answers are mostly right: the vote over chosen crops does no worse
    assert oracle["track_level"]["mean"] >= oracle["crop_level"]["mean"]


@pytest.mark.parametrize("options", [{}, {"people": 8, "seconds": 12.0, "seed": 1}])
def test_detections_without_ids_tracked_by_bytetrack(tmp_path_factory, options):
    pytest.importorskip("supervision")
    pytest.importorskip("motmetrics")
    import video_measure

    report = video_measure.tracking_report(cached_video(tmp_path_factory.getbasetemp(), **options))
    print(json.dumps(report))
    assert report["recovered_share"] >= 0.9 and report["idf1"] >= 0.9


def test_detections_file_through_the_command(video, tiny_bundle, tmp_path):
    pytest.importorskip("supervision")
    import video_measure

    from runtime.video.tracks import write_tracks

    dets = video_measure.detections(video, hidden=1.1, drop=0.0)
    write_tracks(tmp_path / "dets.txt", [(f, -1, *b) for f, arr in dets.items() for b in arr.tolist()])
    res = run(video.path, "--bundle", tiny_bundle, "--tracks", tmp_path / "dets.txt", "--out", tmp_path / "o.jsonl")
    assert res.exit_code == 0, res.output
    recs = tracks_of(tmp_path / "o.jsonl")
    assert len(recs) == len(video.walkers)
    spans = sorted((video.time_of(w.first_frame), video.time_of(w.last_frame)) for w in video.walkers)
    for (a, b), r in zip(spans, sorted(recs, key=lambda r: r["first_seen"])):
        assert abs(r["first_seen"] - a) <= SLACK and abs(r["last_seen"] - b) <= SLACK


def test_background_detector_without_tracks(video, tiny_bundle, tmp_path):
    pytest.importorskip("supervision")
    pytest.importorskip("scipy")
    import video_measure

    report = video_measure.detector_report(video)
    print(json.dumps(report))
    assert report["precision"] >= 0.9 and report["recall_clear_view"] >= 0.6
    res = run(video.path, "--bundle", tiny_bundle, "--out", tmp_path / "o.jsonl")
    assert res.exit_code == 0, res.output
    assert 3 <= len(tracks_of(tmp_path / "o.jsonl")) <= len(video.walkers) + 1


def test_own_detector_plugged_in(video, tiny_bundle, tmp_path):
    pytest.importorskip("supervision")
    (tmp_path / "my_detector.py").write_text(
        "import numpy as np\n"
        "from runtime.video.tracks import read_tracks\n"
        f"GT = read_tracks({str(video.gt)!r})\n"
        "class Detector:\n"
        "    def __init__(self):\n"
        "        self.frame = 0\n"
        "    def __call__(self, rgb):\n"
        "        self.frame += 1\n"
        "        b = GT.at(self.frame).boxes\n"
        "        return np.hstack([b, np.ones((len(b), 1))])\n"
        "def broken(rgb):\n"
        "    return np.zeros((2, 3))\n")
    sys.path.insert(0, str(tmp_path))  # in-process: as PYTHONPATH=DIR would for the command
    try:
        res = run(video.path, "--bundle", tiny_bundle, "--detector", "my_detector:Detector", "--out",
                  tmp_path / "o.jsonl")
        assert res.exit_code == 0, res.output
        assert len(tracks_of(tmp_path / "o.jsonl")) == len(video.walkers)
        res = run(video.path, "--bundle", tiny_bundle, "--detector", "my_detector:broken", "--out",
                  tmp_path / "b.jsonl")
        assert res.exit_code == 2 and error_lines(res) == [
            "error: frame 1: the detector returned shape (2, 3); a detector returns (N, 5) x0, y0, x1, y1, score; "
            "the 0 frames before it were described"]
        assert tracks_of(tmp_path / "b.jsonl") == []
    finally:
        sys.path.remove(str(tmp_path))
    res = run(video.path, "--bundle", tiny_bundle, "--detector", "no_such_module:thing")
    assert res.exit_code == 2 and error_lines(res) == [
        "error: --detector no_such_module:thing: no module 'no_such_module' (is it on PYTHONPATH?)"]


def test_truncated_video_keeps_what_came_before(video, tiny_bundle, tmp_path):
    cut = tmp_path / "cut.mp4"
    data = video.path.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "o.jsonl"
    res = run(cut, "--bundle", tiny_bundle, "--tracks", video.gt, "--out", out)
    assert res.exit_code == 2
    (err,) = error_lines(res)
    assert f"error: {cut}: damaged or truncated after frame " in err and "frames before it were described" in err
    frames = int(err.split("after frame ")[1].split()[0])
    assert 10 < frames < video.frames
    recs = tracks_of(out)
    seen_before = {str(w.track) for w in video.walkers if w.first_frame <= frames}
    assert {r["track"] for r in recs} == seen_before
    assert all(r["last_seen"] <= video.time_of(frames) + 1e-3 for r in recs)


def test_truncated_stream_format_noticed_by_its_duration(tmp_path_factory, tiny_bundle, tmp_path):
    mkv = cached_video(tmp_path_factory.getbasetemp(), container="mkv")
    cut = tmp_path / "cut.mkv"
    data = mkv.path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    res = run(cut, "--bundle", tiny_bundle, "--tracks", mkv.gt, "--out", tmp_path / "o.jsonl")
    assert res.exit_code == 2
    (err,) = error_lines(res)
    assert "but its header says 6.00 s (truncated?)" in err
    assert tracks_of(tmp_path / "o.jsonl")


def test_bad_tracks_file_one_line_and_nothing_written(video, tiny_bundle, tmp_path):
    bad = tmp_path / "tracks.txt"
    text = video.gt.read_text().splitlines()
    text[6] = "7,2,10,20,-5,60,1"
    bad.write_text("\n".join(text) + "\n")
    res = run(video.path, "--bundle", tiny_bundle, "--tracks", bad, "--out", tmp_path / "o.jsonl")
    assert res.exit_code == 2
    assert error_lines(res) == [f"error: {bad}:7: width and height must be > 0, got w=-5 h=60"]
    assert not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob(".o.jsonl*"))


def test_reused_id_and_boxes_outside_the_frame(video, tiny_bundle, tmp_path):
    rows = [line.split(",") for line in video.gt.read_text().splitlines()]
    early, late = sorted(video.walkers, key=lambda w: w.first_frame)[0], max(video.walkers, key=lambda w: w.first_frame)
    cut = early.first_frame + 5  # the early walker's id, reused by the late one after a gap
    keep = []
    for r in rows:
        f, t = int(r[0]), int(r[1])
        if t == early.track and f > cut:
            continue
        if t == late.track:
            r[1] = str(early.track)
        keep.append(",".join(r))
    keep.insert(3, "2,99,1000,1000,40,80,1")  # nowhere in the 320x240 frame
    tracks = tmp_path / "tracks.txt"
    tracks.write_text("\n".join(keep) + "\n")
    res = run(video.path, "--bundle", tiny_bundle, "--tracks", tracks, "--track-timeout", "0.5", "--out",
              tmp_path / "o.jsonl")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, warnings
    assert f"warning: {tracks}:4: box of track 99 in frame 2" in warnings[0]
    assert f"track {early.track} reappears at frame {late.first_frame}" in warnings[1]
    assert warnings[1].startswith(f"warning: {tracks}:") and f"described as track {early.track}#2" in warnings[1]
    names = {r["track"] for r in tracks_of(tmp_path / "o.jsonl")}
    assert {str(early.track), f"{early.track}#2"} <= names and "99" not in names


@pytest.mark.parametrize("bad, message", [
    ("missing.mp4", "no such file"),
    ("garbage.mp4", "cannot read"),
])
def test_unreadable_video(tiny_bundle, tmp_path, bad, message):
    (tmp_path / "garbage.mp4").write_bytes(b"not a video at all" * 100)
    res = run(tmp_path / bad, "--bundle", tiny_bundle, "--out", tmp_path / "o.jsonl")
    assert res.exit_code == 2
    (err,) = error_lines(res)
    assert err.startswith(f"error: {tmp_path / bad}: {message}")
    assert not (tmp_path / "o.jsonl").exists()


def test_start_time(video, tiny_bundle, tmp_path):
    res = run(video.path, "--bundle", tiny_bundle, "--tracks", video.gt, "--start", "2030-01-02T03:04:05Z",
              "--out", tmp_path / "o.jsonl")
    assert res.exit_code == 0, res.output
    first = min(r["first_seen"] for r in tracks_of(tmp_path / "o.jsonl"))
    w = min(video.walkers, key=lambda w: w.first_frame)
    assert first == pytest.approx(1893553445.0 + (w.first_frame - 1) / video.fps, abs=1e-3)
    res = run(video.path, "--bundle", tiny_bundle, "--tracks", video.gt, "--start", "yesterday")
    assert res.exit_code == 2 and "--start: expected an ISO 8601 time" in res.stderr


def _slow_command(*args) -> list[str]:
    # decoding slowed down to 20 frames/s, so that the signal comes while frames are still read
    code = ("import time, runtime.video.source as s; frames = s.VideoSource.frames; "
            "s.VideoSource.frames = lambda self: (time.sleep(0.05) or f for f in frames(self)); "
            "from runtime.video.cli import main; main()")
    return [sys.executable, "-c", code, *map(str, args)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_tracks_in_flight(video, tiny_bundle, tmp_path, sig):
    out = tmp_path / "o.jsonl"
    proc = subprocess.Popen(_slow_command(video.path, "--bundle", tiny_bundle, "--tracks", video.gt, "--out", out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".o.jsonl.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # about 20 frames in
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
    assert f"stopped by {name} after frame " in err and "output is complete up to there" in err
    stopped = int(err.split("after frame ")[1].split(":")[0])
    assert stopped < video.frames
    got = {r["track"] for r in tracks_of(out)}
    # every person in view for a few frames before the signal is described, nobody who came later; one who
    # entered in the last frames may have had no crop worth describing yet (clipped by the frame's edge)
    assert {str(w.track) for w in video.walkers if w.first_frame <= stopped - 5} <= got
    assert got <= {str(w.track) for w in video.walkers if w.first_frame <= stopped}
    assert not list(tmp_path.glob(".o.jsonl*"))


def test_read_ahead_never_blocks_the_caller():
    import threading

    from runtime.video.source import ReadAhead

    release = threading.Event()

    def frames():
        yield "first"
        release.wait(10)  # a stream that went silent
        yield "second"

    r = ReadAhead(frames())
    assert r.get(timeout=5) == "first"
    assert r.get(timeout=0.1) is None
    assert not r.stop(wait_s=0.1)  # still blocked in the stream
    release.set()
    assert r.stop(wait_s=5)


def test_missing_pyav_named_in_one_line(video, tiny_bundle, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoAv:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'av':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NoAv())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", "from runtime.video.cli import main; main()", str(video.path),
                           "--bundle", str(tiny_bundle)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: this command needs PyAV: pip install 'personvlm-toolkit[video]'"


def test_runtime_video_never_imports_torch_or_pvlm(video, tmp_path):
    probe = (
        "import sys, numpy as np\n"
        "from runtime.video import cli, pipeline, source, tracks, select, vote, detector, output, tracker\n"
        f"t = tracks.read_tracks({str(video.gt)!r})\n"
        f"with source.VideoSource({str(video.path)!r}) as s:\n"
        "    det = detector.BackgroundDetector(fps=s.fps)\n"
        "    for f in s.frames():\n"
        "        det(f.rgb())\n"
        "print(sorted(m for m in ('torch', 'timm', 'pvlm', 'export') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.fixture()
def http_video(video):
    """The test video served over HTTP on loopback (FFmpeg reads it as a network stream)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(Path(video.path).parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{Path(video.path).name}"
    server.shutdown()
    server.server_close()


def test_http_stream_into_postgres(video, http_video, tiny_bundle, tmp_path, pg_url):
    import psycopg

    res = run(http_video, "--bundle", tiny_bundle, "--tracks", video.gt, "--camera", "net", "--out",
              tmp_path / "o.jsonl", "--index", pg_url)
    assert res.exit_code == 0, res.output
    recs = tracks_of(tmp_path / "o.jsonl")
    assert sorted(r["track"] for r in recs) == sorted(str(w.track) for w in video.walkers)
    with psycopg.connect(pg_url) as conn:
        stored = sorted(conn.execute("SELECT camera, track FROM pvlm_descriptions").fetchall())
    assert stored == sorted(("net", r["track"]) for r in recs)
