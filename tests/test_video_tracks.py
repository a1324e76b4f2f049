"""MOTChallenge tracks files: read whole, indexed by frame, every bad line named as FILE:LINE."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.video.tracks import TracksError, read_tracks, write_tracks


def _file(tmp_path, text: str, name: str = "tracks.txt"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_tracked_file_indexed_by_frame(tmp_path):
    p = _file(tmp_path, "2,7,10,20,30,60,0.9,-1,-1,-1\n1,7,11,20,30,60,1,-1,-1,-1\n\n# a comment\n1,3,100,5,20,40\n")
    t = read_tracks(p)
    assert t.tracked and t.rows == 3 and t.last_frame == 2 and t.track_ids() == {3, 7}
    f1 = t.at(1)
    assert list(f1.ids) == [7, 3] and list(f1.lines) == [2, 5]
    np.testing.assert_allclose(f1.boxes[0], [11, 20, 41, 80])
    assert f1.scores[1] == 1.0  # no conf column: 1
    assert len(t.at(3)) == 0


def test_detections_without_ids(tmp_path):
    t = read_tracks(_file(tmp_path, "1,-1,10,20,30,60,0.4\n1,-1,50,20,30,60,-1\n"))
    assert not t.tracked and t.track_ids() == set()
    assert list(t.at(1).scores) == [0.4, 1.0]  # conf -1 (unknown) counts as 1


def test_round_trip(tmp_path):
    rows = [(1, 4, 10.0, 20.0, 40.0, 80.0, 1.0), (2, 4, 12.0, 20.0, 42.0, 80.0, 0.5)]
    write_tracks(tmp_path / "t.txt", rows)
    t = read_tracks(tmp_path / "t.txt")
    np.testing.assert_allclose(t.at(2).boxes[0], [12, 20, 42, 80])


@pytest.mark.parametrize("line, message", [
    ("1,7,10,20", "expected at least 6 comma-separated fields"),
    ("x,7,10,20,30,60", "frame is not a number: 'x'"),
    ("0,7,10,20,30,60", "frame must be >= 1"),
    ("1.5,7,10,20,30,60", "frame must be an integer"),
    ("1,-4,10,20,30,60", "id must be >= 0, or -1"),
    ("1,7,nan,20,30,60", "x must be a finite number"),
    ("1,7,10,20,0,60", "width and height must be > 0"),
    ("1,7,10,20,30,-2", "width and height must be > 0"),
    ("1,7,10,20,30,60,abc", "conf is not a number"),
])
def test_bad_line_named_with_its_number(tmp_path, line, message):
    p = _file(tmp_path, f"1,1,0,0,10,20\n{line}\n")
    with pytest.raises(TracksError) as e:
        read_tracks(p)
    assert str(e.value).startswith(f"{p}:2: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_duplicate_track_in_a_frame(tmp_path):
    p = _file(tmp_path, "1,3,0,0,10,20\n2,3,0,0,10,20\n1,3,5,0,10,20\n")
    with pytest.raises(TracksError, match=r"tracks.txt:3: track 3 appears twice in frame 1 \(also line 1\)"):
        read_tracks(p)


def test_tracks_and_detections_not_mixed(tmp_path):
    p = _file(tmp_path, "1,3,0,0,10,20\n1,-1,0,0,10,20\n")
    with pytest.raises(TracksError, match=r":2: id -1 .* a file holds tracks or detections, not both"):
        read_tracks(p)


def test_first_bad_line_and_how_many_more(tmp_path):
    p = _file(tmp_path, "1,1,0,0,10,20\nbad\n1,2,0,0,0,1\nalso bad\n")
    with pytest.raises(TracksError) as e:
        read_tracks(p)
    assert str(e.value).startswith(f"{p}:2: ") and str(e.value).endswith("(and 2 more bad lines)")


def test_unreadable_files(tmp_path):
    with pytest.raises(TracksError, match="cannot read"):
        read_tracks(tmp_path / "missing.txt")
    with pytest.raises(TracksError, match="is a directory"):
        read_tracks(tmp_path)
    p = tmp_path / "bin.txt"
    p.write_bytes(b"1,1,0,0,10,20\n\xff\xfe\n")
    with pytest.raises(TracksError, match=r"bin.txt:2: not UTF-8"):
        read_tracks(p)


def test_empty_file_has_no_boxes(tmp_path):
    t = read_tracks(_file(tmp_path, ""))
    assert t.rows == 0 and t.last_frame == 0 and not t.tracked
