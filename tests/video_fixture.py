"""A synthetic test video with known people: pvlm.synth's renderer walking people across a still background.

Each person (attributes from ``pvlm.synth.sample_attributes``) is drawn once as a transparent sprite,
then walks across the frame at its own size, height and speed, entering and leaving; nearer (larger)
people are drawn over farther ones, so crossings occlude. Some frames of each person are blurred, so
that choosing sharp crops matters. The video is H.264 (PyAV, ``+faststart`` MP4, a creation time in the
header) and comes with its ground truth in MOTChallenge format. Seeded: the same arguments give the
same video.

Run as a script to write one (``python tests/video_fixture.py OUT_DIR --width 1280 --height 720``).
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

START = "2024-05-01T12:00:00Z"
SPRITE_SIZE = (256, 128)  # the renderer's canvas (height, width) for one person
MIN_VISIBLE = 0.3  # a box enters the ground truth once this share of its width is inside the frame


@dataclass(frozen=True)
class Walker:
    """One person of the video: ``track`` is their MOT id; boxes by 1-based frame (they may reach outside)."""

    track: int
    attributes: dict[str, str]
    boxes: dict[int, tuple[float, float, float, float]] = field(repr=False)
    blurred: frozenset[int] = field(repr=False)

    @property
    def first_frame(self) -> int:
        """First 1-based frame with a box."""
        return min(self.boxes)

    @property
    def last_frame(self) -> int:
        """Last 1-based frame with a box."""
        return max(self.boxes)


@dataclass(frozen=True)
class SyntheticVideo:
    """The video file, its ground-truth MOT file and who is in it."""

    path: Path
    gt: Path
    walkers: tuple[Walker, ...]
    fps: int
    width: int
    height: int
    frames: int
    start: float  # epoch seconds of frame 1

    def time_of(self, frame: int) -> float:
        """Epoch seconds of a 1-based frame."""
        return self.start + (frame - 1) / self.fps

    def walker(self, track: int | str) -> Walker:
        """The walker with MOT id ``track``."""
        return next(w for w in self.walkers if str(w.track) == str(track))


def render_sprite(attributes: dict[str, str], rng: np.random.Generator) -> Image.Image:
    """One person as an RGBA image cropped to what was drawn (transparent elsewhere), by pvlm.synth's painter."""
    from pvlm.synth import _layout, _Painter  # the renderer's own drawing, on a transparent canvas

    h, w = SPRITE_SIZE
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    _Painter(img, attributes, _layout(attributes, rng, h, w), rng).draw()
    x0, y0, x1, y1 = img.getchannel("A").getbbox()
    m = max(2, round(0.03 * (y1 - y0)))  # a little slack around the person, as a detector's box has
    return img.crop((max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)))


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A still, textured street-like background: a sky-to-ground gradient, a floor and some blocks."""
    top, bottom = rng.uniform(90, 200, 3), rng.uniform(40, 140, 3)
    t = np.linspace(0, 1, height)[:, None, None]
    arr = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()
    horizon = int(height * rng.uniform(0.45, 0.6))
    arr[horizon:] = rng.uniform(60, 150, 3)
    for _ in range(8):
        x0, y0 = int(rng.uniform(0, width)), int(rng.uniform(0, horizon))
        bw, bh = int(rng.uniform(0.05, 0.25) * width), int(rng.uniform(0.1, 0.4) * height)
        arr[y0:y0 + bh, x0:x0 + bw] = rng.uniform(50, 210, 3)
    arr += rng.normal(0, 4, arr.shape)  # texture, so that sharpness and background models have something
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _walks(rng: np.random.Generator, people: int, width: int, height: int, fps: int, frames: int,
           sprites: list[Image.Image]) -> list[dict[int, tuple[float, float, float, float]]]:
    seconds = frames / fps
    paths = []
    for i in range(people):
        sh, sw = sprites[i].height, sprites[i].width
        h = height * rng.uniform(0.4, 0.85)
        w = h * sw / sh
        bottom = height * (0.5 + 0.5 * h / height) + rng.uniform(-0.02, 0.02) * height
        left_to_right = rng.random() < 0.5
        enter = rng.uniform(-0.1, 0.45) * seconds  # some are already in at the start
        cross = rng.uniform(0.45, 0.7) * seconds  # some are still in at the end
        boxes = {}
        for f in range(1, frames + 1):
            u = ((f - 1) / fps - enter) / cross
            if not 0 <= u <= 1:
                continue
            x = -w + u * (width + w)
            x0 = x if left_to_right else width - x - w
            box = (x0, bottom - h, x0 + w, bottom)
            inside = min(width, box[2]) - max(0.0, box[0])
            if inside >= MIN_VISIBLE * w:
                boxes[f] = box
        paths.append(boxes)
    return paths


def make_video(directory: str | Path, *, seed: int = 0, width: int = 320, height: int = 240, fps: int = 10,
               seconds: float = 6.0, people: int = 5, blur_share: float = 0.3,
               container: str = "mp4") -> SyntheticVideo:
    """Write ``video.mp4`` (or ``.mkv``, a format that streams) and ``gt.txt`` (MOT) into ``directory``."""
    import av

    from pvlm.synth import sample_attributes

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(seed)
    scene_ss, *person_ss = root.spawn(people + 1)
    rng = np.random.default_rng(scene_ss)
    frames = round(seconds * fps)
    attrs, sprites, blur = [], [], []
    for ss in person_ss:
        a_ss, s_ss, b_ss = ss.spawn(3)
        a = sample_attributes(np.random.default_rng(a_ss))
        attrs.append(a)
        sprites.append(render_sprite(a, np.random.default_rng(s_ss)))
        brng = np.random.default_rng(b_ss)
        blur.append(frozenset(f for f in range(1, frames + 1) if brng.random() < blur_share))
    bg = background(rng, width, height)
    paths = _walks(rng, people, width, height, fps, frames, sprites)
    walkers = tuple(Walker(i + 1, attrs[i], paths[i], blur[i]) for i in range(people) if paths[i])
    noise = np.random.default_rng(seed + 1)
    video, gt = out / f"video.{container}", out / "gt.txt"
    with av.open(str(video), "w", options={"movflags": "+faststart"} if container == "mp4" else {}) as c:
        c.metadata["creation_time"] = START.replace("Z", ".000000Z")
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "18", "g": str(fps)}
        for f in range(1, frames + 1):
            img = bg.copy()
            # far (higher feet) first, so nearer people occlude them
            for wk in sorted((w for w in walkers if f in w.boxes), key=lambda w: w.boxes[f][3]):
                x0, y0, x1, y1 = wk.boxes[f]
                sprite = sprites[wk.track - 1].resize((max(1, round(x1 - x0)), max(1, round(y1 - y0))),
                                                      Image.BILINEAR)
                if f in wk.blurred:
                    sprite = sprite.filter(ImageFilter.GaussianBlur(2.5 * (y1 - y0) / 200))
                img.paste(sprite, (round(x0), round(y0)), sprite)
            arr = np.asarray(img, np.int16) + noise.normal(0, 2, (height, width, 3)).astype(np.int16)
            frame = av.VideoFrame.from_ndarray(np.clip(arr, 0, 255).astype(np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    rows = sorted((f, w.track, *w.boxes[f]) for w in walkers for f in w.boxes)
    gt.write_text("".join(f"{f},{t},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},1,1,1\n"
                          for f, t, x0, y0, x1, y1 in rows))
    start = datetime.fromisoformat(START.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()
    (out / "people.json").write_text(json.dumps([{"track": w.track, "attributes": w.attributes,
                                                  "first_frame": w.first_frame, "last_frame": w.last_frame}
                                                 for w in walkers], indent=1))
    return SyntheticVideo(video, gt, walkers, fps, width, height, frames, start)


@functools.cache
def cached_video(base: Path, **options: object) -> SyntheticVideo:
    """:func:`make_video` once per test session (``base``: the session's temporary directory) and options."""
    name = "video-" + "-".join(f"{k}{v}" for k, v in sorted(options.items())) if options else "video"
    return make_video(Path(base) / name, **options)  # type: ignore[arg-type]


def main() -> None:
    """Write a synthetic video and its ground truth (for benchmarks and a look at it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--people", type=int, default=5)
    a = p.parse_args()
    v = make_video(a.out, seed=a.seed, width=a.width, height=a.height, fps=a.fps, seconds=a.seconds, people=a.people)
    print(f"{v.path} ({v.frames} frames, {len(v.walkers)} people), ground truth {v.gt}")



class OracleDescriber:
    """A stand-in for a trained model on a synthetic video: it names the walker whose garment colours cover
    most of a crop and answers with a caption of that walker's attributes (pvlm.synth's captions, which the
    parser reads back). It wraps a real Describer for everything else (bundle, backend, batch size).

    The tiny random test model says nothing that can be checked; this one is right when the crop shows one
    person clearly, and wrong when another one's colours dominate (occlusion, blur), as a model would be.
    """

    def __init__(self, video: SyntheticVideo, inner: object) -> None:
        self.video, self.inner = video, inner
        self.bundle = inner.bundle
        self.max_batch = inner.max_batch
        self.backend_name = inner.backend_name
        self.calls = 0

    def identify(self, crop: np.ndarray) -> Walker:
        """The walker whose upper and lower garment colours cover most of ``crop``."""
        from pvlm.synth import COLOR_RGB

        px = crop.reshape(-1, 3).astype(np.float32)

        def cover(color: str) -> float:
            return float((np.linalg.norm(px - np.asarray(COLOR_RGB[color], np.float32), axis=1) < 50).mean())

        return max(self.video.walkers, key=lambda w: cover(w.attributes["upper_color"])
                   + cover(w.attributes["lower_color"]))

    def describe(self, images: list[np.ndarray], *, channel_order: str, **_: object) -> list[object]:
        """One caption per crop (RGB arrays)."""
        from pvlm.synth import caption
        from runtime.attributes import parse_attributes
        from runtime.describer import Description

        assert channel_order == "rgb"
        out = []
        for crop in images:
            w = self.identify(crop)
            self.calls += 1
            text = caption(w.attributes, np.random.default_rng([w.track, self.calls]))
            out.append(Description(text, [], parse_attributes(text), {"total_ms": 0.0}))
        return out

    def close(self) -> None:
        """Close the wrapped Describer."""
        self.inner.close()

    def __enter__(self) -> OracleDescriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
