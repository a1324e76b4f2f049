"""Photographs shipped by installed packages, cropped at random as backgrounds for synthetic people.

The files are found through the package metadata (nothing is imported) and read once per process.
None of them shows a person, and none is a photograph of the real-photo check
(``bench/real_photos.jsonl``): a background must never teach the model the crops it is judged on.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
from PIL import Image

from .installed_files import locate

log = logging.getLogger(__name__)

# (distribution, file inside it). Each one checked by eye for people: none shows any.
PHOTOS: tuple[tuple[str, str], ...] = (
    ("scikit-image", "skimage/data/brick.png"),  # brick wall (greyscale)
    ("scikit-image", "skimage/data/grass.png"),  # lawn (greyscale)
    ("scikit-image", "skimage/data/gravel.png"),  # gravel (greyscale)
    ("scikit-image", "skimage/data/moon.png"),  # lunar surface, reads as concrete (greyscale)
    ("scikit-image", "skimage/data/coffee.png"),  # cup on a wooden table
    ("scikit-image", "skimage/data/chelsea.png"),  # a cat, fur and a room behind it
    ("scikit-image", "skimage/data/rocket.jpg"),  # launch pad at dusk, towers and lights
    ("scikit-image", "skimage/data/motorcycle_left.png"),  # garage: shelves, boxes, concrete floor
    ("scikit-learn", "sklearn/datasets/images/china.jpg"),  # a temple and trees
    ("scikit-learn", "sklearn/datasets/images/flower.jpg"),  # a flower close-up
)
# The real-photo check's photographs and other pictures of people: never a background.
EXCLUDED: frozenset[tuple[str, str]] = frozenset({
    ("scikit-image", "skimage/data/astronaut.png"),
    ("scikit-image", "skimage/data/camera.png"),
    ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    ("ultralytics", "ultralytics/assets/bus.jpg"),
    ("ultralytics", "ultralytics/assets/zidane.jpg"),
    ("insightface", "insightface/data/images/t1.jpg"),
    ("insightface", "insightface/data/images/Tom_Hanks_54745.png"),
})
_MAX_SIDE = 512  # photos are kept at most this large: about 0.8 MB each


@lru_cache(maxsize=1)
def photos() -> tuple[tuple[Image.Image, bool], ...]:
    """The installed photographs of :data:`PHOTOS` as (RGB image, was greyscale), loaded once per process.

    Warns once when none is installed; the renderer then draws every background.
    """
    out = []
    for package, file in PHOTOS:
        if (package, file) in EXCLUDED:  # a guard against a careless edit of PHOTOS
            continue
        path = locate(package, file)
        if path is None:
            continue
        with Image.open(path) as im:
            grey = im.mode in ("L", "LA", "I", "I;16")
            rgb = im.convert("RGB")
        rgb.thumbnail((_MAX_SIDE, _MAX_SIDE), Image.Resampling.BILINEAR)
        out.append((rgb, grey))
    if not out:
        log.warning("no photograph for backgrounds is installed (pip install scikit-image); "
                    "every background is drawn")
    return tuple(out)


def photo_background(rng: np.random.Generator, h: int, w: int) -> Image.Image | None:
    """A random crop (scale, position, mirror) of an installed photograph, resized to ``h`` x ``w``; None if none."""
    pool = photos()
    if not pool:
        return None
    photo, grey = pool[int(rng.integers(len(pool)))]
    pw, ph = photo.size
    full_h = min(ph, pw * h / w)  # the tallest crop of the target's aspect
    ch = full_h * rng.uniform(0.3, 1.0)
    cw = ch * w / h
    x0, y0 = rng.uniform(0, pw - cw), rng.uniform(0, ph - ch)
    img = photo.resize((w, h), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if grey:  # a tint, so that brick, grass and gravel are not always grey
        tint = rng.uniform(0.75, 1.25, 3)
        arr = np.asarray(img, dtype=np.float32) * (tint / tint.mean()).astype(np.float32)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return img
