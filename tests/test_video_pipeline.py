"""The Python API (VideoDescriber): frames and boxes in, one voted description per track out.

A fake describer stands in for the model: it names the person by the crop's colour and answers with
that person's caption, except for blurred (flat) crops, where it answers wrongly. So the tests can tell
whether the sharp crops were chosen and the vote kept the right answer.
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.attributes import parse_attributes
from runtime.describer import Description
from runtime.video.output import crop_line, store_record, thumb_name, track_line, write_thumb
from runtime.video.pipeline import VideoDescriber, VideoOptions
from runtime.video.select import laplacian_variance

W, H, FPS, T0 = 320, 240, 10.0, 1_714_564_800.0
PEOPLE = {  # name -> (colour, caption)
    "1": ((200, 30, 35), "a woman wearing a red jacket and black trousers, carrying a backpack, walking."),
    "2": ((35, 70, 190), "a man wearing a blue coat and grey jeans, walking, seen from the side."),
    "3": ((40, 150, 60), "a young man in a green hoodie and white shorts, standing, seen from the front."),
}
WRONG = "a man wearing a yellow t-shirt and brown skirt, holding an umbrella."


class FakeDescriber:
    """Names the person by colour; a flat (blurred) crop gets a wrong answer."""

    max_batch = 4
    backend_name = "fake"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.fail = False

    def describe(self, images, *, channel_order):
        assert channel_order == "rgb"
        self.batches.append(len(images))
        out = []
        for crop in images:
            if self.fail:
                out.append(Description("", [], {}, error="input 0: broken"))
                continue
            mean = crop.reshape(-1, 3).mean(axis=0)
            name = min(PEOPLE, key=lambda k: np.linalg.norm(mean - 0.75 * np.array(PEOPLE[k][0])))
            gray = crop.mean(axis=2).astype(np.float32)
            text = WRONG if laplacian_variance(gray) < 50 else PEOPLE[name][1]
            out.append(Description(text, [], parse_attributes(text), {"total_ms": 1.0}))
        return out


def _paint(frame: np.ndarray, box, color, sharp: bool) -> None:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    c = np.array(color, np.float32)
    if sharp:
        yy, xx = np.mgrid[y0:y1, x0:x1]
        check = (((yy // 3 + xx // 3) % 2) * 0.5 + 0.5)[..., None]  # 0.5c / 1.0c: mean 0.75c
        frame[y0:y1, x0:x1] = (check * c).astype(np.uint8)
    else:
        frame[y0:y1, x0:x1] = (0.75 * c).astype(np.uint8)


def _scene(seconds: float = 4.0):
    """Frames of three people walking in lanes of their own: person 1 blurred in every third frame."""
    n = int(seconds * FPS)
    spans = {"1": (0, n), "2": (5, 30), "3": (12, n - 4)}
    for i in range(n):
        frame = np.full((H, W, 3), 128, np.uint8)
        boxes = {}
        for name, (a, b) in spans.items():
            if a <= i < b:
                k = int(name)
                x = 10 + (i - a) + 100 * (k - 1)
                boxes[name] = (x, 40 + 10 * k, x + 40 + 5 * k, 120 + 30 * k)
                _paint(frame, boxes[name], PEOPLE[name][0], sharp=not (name == "1" and i % 3 == 0))
        yield i, T0 + i / FPS, frame, boxes


def _run(vd: VideoDescriber, **kw):
    out = []
    for i, t, frame, boxes in _scene(**kw):
        out += vd.add_frame(frame, t, boxes, channel_order="rgb")
    return out + vd.finish()


def test_one_voted_record_per_track_with_sharp_crops():
    fake = FakeDescriber()
    vd = VideoDescriber(fake, VideoOptions(camera="door", track_timeout_s=1.0))
    tracks = _run(vd)
    assert sorted(t.track for t in tracks) == ["1", "2", "3"]
    by = {t.track: t for t in tracks}
    assert by["2"].first_seen == pytest.approx(T0 + 0.5) and by["2"].last_seen == pytest.approx(T0 + 2.9)
    assert by["1"].first_frame == 0 and by["1"].frames == 40
    for name, td in by.items():
        assert td.camera == "door" and td.error is None
        assert len(td.crops) == 3
        assert td.text == PEOPLE[name][1]
        assert td.attributes == parse_attributes(PEOPLE[name][1])
        assert all(v == 1.0 for v in td.agreement.values())
        assert all(c.quality.sharpness > 50 for c in td.crops)  # the blurred frames were passed over
        times = [c.timestamp for c in td.crops]
        assert times == sorted(times) and times[-1] - times[0] > (td.last_seen - td.first_seen) / 2  # spread out
    assert max(fake.batches) <= 4 * 3 and vd.stats.tracks == 3 and vd.stats.crops == 9


def test_vote_outvotes_a_wrong_crop():
    fake = FakeDescriber()
    vd = VideoDescriber(fake, VideoOptions(sample_fps=10.0))
    for i in range(12):  # person 1 sharp in 8 of 12 frames, never chosen blurred when sharp ones exist
        frame = np.full((H, W, 3), 128, np.uint8)
        box = (50 + 2 * i, 40, 90 + 2 * i, 160)
        _paint(frame, box, PEOPLE["1"][0], sharp=i % 3 != 0)
        vd.add_frame(frame, T0 + i / 10, {"1": box}, channel_order="rgb")
    (td,) = vd.finish()
    assert td.text == PEOPLE["1"][1]
    from runtime.video.vote import vote

    wrong = parse_attributes(WRONG)
    voted, agreement = vote([td.attributes, td.attributes, wrong], [0.1, 0.1, 0.9])
    assert voted == td.attributes and agreement["upper_color"] == pytest.approx(2 / 3, abs=1e-3)


def test_bgr_frames_are_described_as_rgb():
    fake = FakeDescriber()
    vd = VideoDescriber(fake, VideoOptions())
    for i in range(5):
        frame = np.full((H, W, 3), 128, np.uint8)
        _paint(frame, (50, 40, 90, 160), PEOPLE["1"][0], sharp=True)
        vd.add_frame(np.ascontiguousarray(frame[..., ::-1]), T0 + i / 10, {7: (50, 40, 90, 160)}, channel_order="bgr")
    (td,) = vd.finish()
    assert td.track == "7" and td.text == PEOPLE["1"][1]
    with pytest.raises(ValueError, match="channel_order"):
        vd.add_frame(frame, T0 + 1, {}, channel_order="rgba")


def test_reused_id_outside_boxes_and_short_tracks():
    warnings: list[str] = []
    vd = VideoDescriber(FakeDescriber(), VideoOptions(track_timeout_s=0.5, min_frames=3), on_warning=warnings.append)
    frame = np.full((H, W, 3), 128, np.uint8)
    _paint(frame, (50, 40, 90, 160), PEOPLE["2"][0], sharp=True)
    out = []
    for i in range(30):
        boxes = {}
        if i < 5 or i >= 15:  # id 4 ends (unseen for 1 s > 0.5 s), then comes back
            boxes["4"] = (50, 40, 90, 160)
        if i in (3, 4):  # a track of two frames: dropped
            boxes["9"] = (200, 40, 240, 160)
        if i == 6:
            boxes["5"] = (400, 10, 450, 100)  # nowhere in the frame
        out += vd.add_frame(frame, T0 + i / 10, boxes, channel_order="rgb")
    out += vd.finish()
    assert sorted(t.track for t in out) == ["4", "4#2"]
    assert vd.stats.reused == 1 and vd.stats.dropped == 1 and vd.stats.outside == 1
    assert any("track 4 reappears at frame 16" in w and "described as track 4#2" in w for w in warnings)
    assert any("box of track 5 in frame 7" in w and "no area inside the 320x240 frame" in w for w in warnings)
    assert len(warnings) == 2


def test_long_track_split_and_bounded_memory():
    vd = VideoDescriber(FakeDescriber(), VideoOptions(max_track_s=20.0, pool_size=6, sample_fps=5.0))
    frame = np.full((H, W, 3), 128, np.uint8)
    _paint(frame, (50, 40, 90, 160), PEOPLE["3"][0], sharp=True)
    out = []
    for i in range(500):  # 50 s of one track
        out += vd.add_frame(frame, T0 + i / 10, {"1": (50, 40, 90, 160)}, channel_order="rgb")
        assert all(len(t.pool) <= 6 for t in vd._tracks.values())
    out += vd.finish()
    assert [t.part for t in out] == [1, 2, 3] and {t.track for t in out} == {"1"}
    assert out[0].last_seen < out[1].first_seen and out[2].last_seen == pytest.approx(T0 + 49.9)


def test_failed_descriptions_give_a_track_error():
    fake = FakeDescriber()
    fake.fail = True
    vd = VideoDescriber(fake, VideoOptions())
    frame = np.full((H, W, 3), 128, np.uint8)
    for i in range(5):
        vd.add_frame(frame, T0 + i / 10, {"1": (50, 40, 90, 160)}, channel_order="rgb")
    (td,) = vd.finish()
    assert td.best is None and td.text == "" and "no crop of track 1 could be described: input 0: broken" == td.error
    line = track_line(td, video="v.mp4", bundle="0" * 16, backend="fake")
    assert line["error"] and line["text"] == "" and store_record(td, None) is None


def test_bad_input_is_refused():
    vd = VideoDescriber(FakeDescriber(), VideoOptions())
    frame = np.zeros((H, W, 3), np.uint8)
    vd.add_frame(frame, T0 + 1, {}, channel_order="rgb")
    with pytest.raises(ValueError, match="before the previous frame"):
        vd.add_frame(frame, T0, {}, channel_order="rgb")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        vd.add_frame(frame[..., 0], T0 + 2, {}, channel_order="rgb")
    with pytest.raises(ValueError, match="needs a detector"):
        vd.add_frame(frame, T0 + 2, channel_order="rgb")
    with pytest.raises(ValueError, match="need a tracker"):
        vd.add_frame(frame, T0 + 2, detections=np.zeros((0, 5)), channel_order="rgb")
    with pytest.raises(ValueError, match="pool_size"):
        VideoOptions(crops_per_track=5, pool_size=3)
    with pytest.raises(ValueError, match="camera"):
        VideoOptions(camera="")


def test_detections_linked_by_bytetrack():
    pytest.importorskip("supervision")
    from runtime.video.tracker import ByteTracker

    vd = VideoDescriber(FakeDescriber(), VideoOptions(), tracker=ByteTracker(FPS))
    out = []
    for i, t, frame, boxes in _scene():
        dets = np.array([[*b, 0.9] for b in boxes.values()], np.float32).reshape(-1, 5)
        out += vd.add_frame(frame, t, detections=dets, channel_order="rgb")
    out += vd.finish()
    assert len(out) == 3
    assert sorted(t.text for t in out) == sorted(c for _, c in PEOPLE.values())


def test_lines_thumbs_and_store(tmp_path):
    from runtime.search import SQLiteStore

    vd = VideoDescriber(FakeDescriber(), VideoOptions(camera="door 1"))
    tracks = _run(vd)
    td = next(t for t in tracks if t.track == "1")
    line = track_line(td, video="v.mp4", bundle="ab" * 8, backend="fake", thumb="x.jpg")
    assert line["kind"] == "track" and line["camera"] == "door 1" and line["track"] == "1"
    assert line["first_seen"] == round(td.first_seen, 3) and line["timestamp"] == round(td.best_crop.timestamp, 3)
    assert line["image"] == f"v.mp4#frame={td.best_crop.frame + 1}" and line["bundle_id"] == "ab" * 8
    assert line["crops"] == 3 and line["frames"] == td.frames and len(line["box"]) == 4
    crop = crop_line(td, td.crops[0], video="v.mp4", bundle="ab" * 8, backend="fake")
    assert crop["kind"] == "crop" and 0 <= crop["quality"]["score"] <= 1
    path = write_thumb(tmp_path / "thumbs", td)
    assert path.name == thumb_name(td) == "door-1_1.jpg" and path.read_bytes()[:2] == b"\xff\xd8"
    store = SQLiteStore(tmp_path / "s.db")
    assert store.add([store_record(t, "ab" * 8) for t in tracks]) == 3
    hits = store.search("woman in a red jacket with a backpack")
    assert [(h.camera, h.track) for h in hits] == [("door 1", "1")]
    hits = store.search("green hoodie", camera="door 1")
    assert [h.track for h in hits] == ["3"]
    store.close()
