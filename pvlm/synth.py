"""Procedural synthetic person crops with known attributes and MSP60k-style captions."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from runtime.atomic import atomic_dir
from runtime.attribute_schema import COLORS, FIELD

from .synth_backgrounds import photo_background, photos

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]

# The order labels are drawn in: each draw takes the next number of the seed's stream, so changing it
# changes every crop of a seed. Values and their order come from the runtime's attribute schema. The
# street priors use the stream differently (one float per label, and more draws in the renderer), so
# their crops differ from the uniform ones of a seed; the uniform recipe keeps its crops exactly.
_DRAW_ORDER: tuple[str, ...] = (
    "upper", "upper_color", "lower", "lower_color", "shoes_color", "headwear", "carrying", "posture", "view", "gender",
    "age",
)
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {key: FIELD[key].drawn for key in _DRAW_ORDER}

PRIORS: tuple[str, ...] = ("street", "uniform")
# How often each value is drawn with ``priors="street"``: roughly as in pedestrian footage, so that the
# model's priors are a street's (a uniform draw made "no hat" one value in four and "nothing carried"
# one in six, and the model trained on it named headwear and a carried object for nearly everyone in
# real photographs). Published: in PETA "accessoryNothing" (no hat, scarf or sunglasses) is 0.74 of the
# images and age over 60 0.06 ("Data augmentation imbalance for imbalanced attribute classification",
# arXiv:2004.13628, section 1). Every other number is an ESTIMATE, not a measured frequency: most
# pedestrians adult, dark clothes, jeans and trousers common; pink, purple, yellow, helmets, umbrellas
# and suitcases rare. No value is below 2.5%, so that every attribute head still sees every class.
# ``upper_color != lower_color`` still holds: the lower colour is drawn from its row without the upper's.
STREET_PRIORS: dict[str, dict[str, float]] = {
    "upper": {"t-shirt": 0.22, "shirt": 0.14, "jacket": 0.26, "coat": 0.14, "hoodie": 0.10, "sweater": 0.14},
    "upper_color": {"red": 0.07, "blue": 0.14, "green": 0.05, "yellow": 0.03, "black": 0.27, "white": 0.15,
                    "grey": 0.14, "orange": 0.03, "purple": 0.03, "pink": 0.04, "brown": 0.05},
    "lower": {"trousers": 0.45, "jeans": 0.35, "shorts": 0.10, "skirt": 0.10},
    "lower_color": {"red": 0.03, "blue": 0.22, "green": 0.03, "yellow": 0.025, "black": 0.35, "white": 0.05,
                    "grey": 0.14, "orange": 0.025, "purple": 0.025, "pink": 0.025, "brown": 0.08},
    "shoes_color": {"red": 0.03, "blue": 0.05, "green": 0.03, "yellow": 0.03, "black": 0.35, "white": 0.20,
                    "grey": 0.10, "orange": 0.03, "purple": 0.03, "pink": 0.03, "brown": 0.12},
    "headwear": {"none": 0.76, "cap": 0.10, "hat": 0.09, "helmet": 0.05},
    "carrying": {"none": 0.45, "backpack": 0.20, "handbag": 0.20, "umbrella": 0.04, "phone": 0.07,
                 "suitcase": 0.04},
    "posture": {"standing": 0.40, "walking": 0.60},
    "view": {"front": 0.40, "back": 0.35, "side": 0.25},
    "gender": {"male": 0.55, "female": 0.45},
    "age": {"adult": 0.80, "young": 0.20},
}
_STREET_WEIGHTS: dict[str, np.ndarray] = {
    key: np.array([STREET_PRIORS[key][v] for v in values], dtype=np.float64) for key, values in ATTRIBUTE_VALUES.items()
}

COLOR_RGB: dict[str, RGB] = {
    "red": (200, 30, 35),
    "blue": (35, 70, 190),
    "green": (40, 150, 60),
    "yellow": (235, 210, 40),
    "black": (25, 25, 28),
    "white": (240, 240, 238),
    "grey": (128, 128, 130),
    "orange": (240, 130, 30),
    "purple": (120, 50, 160),
    "pink": (240, 140, 185),
    "brown": (120, 75, 40),
}

_SKIN: tuple[RGB, ...] = (
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 130),
    (198, 134, 95),
    (160, 105, 70),
    (120, 80, 55),
    (90, 60, 40),
)
_HAIR: tuple[RGB, ...] = (
    (20, 15, 12),
    (45, 30, 20),
    (80, 50, 28),
    (120, 80, 40),
    (200, 170, 110),
    (150, 148, 145),
    (110, 40, 25),
)
_BAG_COLORS: tuple[str, ...] = ("black", "grey", "brown", "blue", "red", "green", "purple", "pink", "white")


# --------------------------------------------------------------------------- attributes and captions


def sample_attributes(rng: np.random.Generator, priors: str = "uniform") -> dict[str, str]:
    """Draw one value per attribute (uniformly, or as :data:`STREET_PRIORS`), with ``upper_color != lower_color``."""
    if priors == "street":
        return _sample_street(rng)
    if priors != "uniform":
        raise ValueError(f"priors must be one of {', '.join(PRIORS)}, got {priors!r}")
    attrs: dict[str, str] = {}
    for key, values in ATTRIBUTE_VALUES.items():
        if key == "lower_color":
            values = tuple(c for c in values if c != attrs["upper_color"])
        attrs[key] = str(values[int(rng.integers(len(values)))])
    return attrs


def _sample_street(rng: np.random.Generator) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for key, values in ATTRIBUTE_VALUES.items():
        weights = _STREET_WEIGHTS[key]
        if key == "lower_color":
            weights = np.where(np.array(values) == attrs["upper_color"], 0.0, weights)
        cum = np.cumsum(weights)
        i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        attrs[key] = str(values[min(i, len(values) - 1)])
    return attrs


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _noun(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    """A garment's or object's name: its first word three times in four, else one of the others.

    With every synonym equally likely, a value with three names ("trousers", "pants", "slacks")
    reached a greedy decoder as three thirds against one whole ("jeans"), and the model trained on
    them wrote "jeans" for 77 of 78 crops of trousers that its attribute head told apart 40 times.
    """
    if len(options) == 1 or rng.random() < 0.75:
        return options[0]
    return options[1 + int(rng.integers(len(options) - 1))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


_UPPER_WORDS = {
    "t-shirt": ("t-shirt", "tee", "short-sleeved t-shirt"),
    "shirt": ("shirt", "button-up shirt", "collared shirt"),
    "jacket": ("jacket", "zip-up jacket"),
    "coat": ("coat", "long coat", "overcoat"),
    "hoodie": ("hoodie", "hooded sweatshirt"),
    "sweater": ("sweater", "knit sweater", "jumper"),
}
_LOWER_WORDS = {
    "trousers": ("trousers", "pants", "slacks"),
    "jeans": ("jeans",),
    "shorts": ("shorts",),
    "skirt": ("skirt", "knee-length skirt"),
}
_HEADWEAR_WORDS = {"cap": ("cap", "baseball cap"), "hat": ("hat", "wide-brimmed hat"), "helmet": ("helmet",)}
_CARRY_WORDS = {
    "backpack": ("backpack", "rucksack"),
    "handbag": ("handbag", "purse", "shoulder bag"),
    "umbrella": ("umbrella",),
    "phone": ("phone", "mobile phone", "smartphone"),
    "suitcase": ("suitcase", "rolling suitcase"),
}
_CARRY_VERBS = {"backpack": ("carrying", "with", "wearing"), "suitcase": ("carrying", "pulling", "with")}
_PERSON_WORDS = {
    ("male", "young"): ("young man", "boy", "teenage boy", "young male"),
    ("female", "young"): ("young woman", "girl", "teenage girl", "young female"),
    ("male", "adult"): ("adult man", "adult male", "middle-aged man"),
    ("female", "adult"): ("adult woman", "adult female", "middle-aged woman"),
}
_VIEW_PHRASES = {
    "front": ("seen from the front", "viewed from the front", "facing the camera", "shown from the front"),
    "back": ("seen from behind", "viewed from the back", "shown from the rear", "seen from the back"),
    "side": ("seen from the side", "viewed from the side", "in profile", "shown from the side"),
}
_POSTURE_ING = {"walking": ("walking", "walking along"), "standing": ("standing", "standing still")}
_POSTURE_IS = {"walking": ("is walking", "walks"), "standing": ("is standing", "stands still")}


@dataclass(frozen=True)
class _Phrases:
    person: str
    pron: str
    poss: str
    upper: str
    lower: str
    shoes: str
    headwear: str | None
    carry: str | None
    carry_verb: str
    carry_ing: str  # "carrying" / "holding"
    carry_3rd: str  # "carries" / "holds"
    posture_ing: str
    posture_is: str
    view: str
    view_title: str


def _phrases(attrs: dict[str, str], rng: np.random.Generator) -> _Phrases:
    lower_word = _noun(rng, _LOWER_WORDS[attrs["lower"]])
    lower = f"{attrs['lower_color']} {lower_word}"
    if attrs["lower"] == "skirt":
        lower = _article(lower)
    elif rng.random() < 0.2:
        lower = f"a pair of {lower}"
    hw = attrs["headwear"]
    carry = attrs["carrying"]
    male = attrs["gender"] == "male"
    ing = "carrying" if carry in ("backpack", "suitcase") or rng.random() < 0.5 else "holding"
    return _Phrases(
        person=_pick(rng, _PERSON_WORDS[(attrs["gender"], attrs["age"])]),
        pron="he" if male else "she",
        poss="his" if male else "her",
        upper=_article(f"{attrs['upper_color']} {_noun(rng, _UPPER_WORDS[attrs['upper']])}"),
        lower=lower,
        shoes=f"{attrs['shoes_color']} {_pick(rng, ('shoes', 'sneakers', 'boots'))}",
        headwear=_article(_noun(rng, _HEADWEAR_WORDS[hw])) if hw != "none" else None,
        carry=_article(_noun(rng, _CARRY_WORDS[carry])) if carry != "none" else None,
        carry_verb=_pick(rng, _CARRY_VERBS.get(carry, ("carrying", "holding", "with"))),
        carry_ing=ing,
        carry_3rd="carries" if ing == "carrying" else "holds",
        posture_ing=_pick(rng, _POSTURE_ING[attrs["posture"]]),
        posture_is=_pick(rng, _POSTURE_IS[attrs["posture"]]),
        view=_pick(rng, _VIEW_PHRASES[attrs["view"]]),
        view_title=f"{attrs['view']} view",
    )


def _t_participles(p: _Phrases, rng: np.random.Generator) -> str:
    parts = [f"{_article(p.person)} wearing {p.upper} and {p.lower}"]
    if p.headwear:
        parts.append(f"with {p.headwear}")
    if p.carry:
        parts.append(f"{p.carry_verb} {p.carry}")
    parts += [p.posture_ing, p.view]
    return ", ".join(parts) + "."


def _t_sentences(p: _Phrases, rng: np.random.Generator) -> str:
    dressed = _pick(rng, ("is dressed in", "is wearing", "wears"))
    shoes = f" and {p.shoes}" if rng.random() < 0.5 else ""
    out = [f"the {p.person} {dressed} {p.upper} with {p.lower}{shoes}."]
    if p.headwear and p.carry:
        out.append(f"{p.pron} wears {p.headwear} and {p.carry_3rd} {p.carry}.")
    elif p.headwear:
        out.append(f"{p.pron} wears {p.headwear}.")
    elif p.carry:
        out.append(f"{p.pron} is {p.carry_ing} {p.carry}.")
    out.append(f"{p.pron} is {p.posture_ing.split()[0]}, {p.view}.")
    return " ".join(out)


def _t_view_first(p: _Phrases, rng: np.random.Generator) -> str:
    extra = ""
    if p.headwear:
        extra += f", wearing {p.headwear}"
    if p.carry:
        extra += f", {p.carry_verb} {p.carry}"
    return (
        f"{p.view_title}: {_article(p.person)} in {p.upper}, {p.lower} and {p.shoes}{extra}. {p.pron} {p.posture_is}."
    )


def _t_posture_first(p: _Phrases, rng: np.random.Generator) -> str:
    text = f"{_article(p.posture_ing.split()[0] + ' ' + p.person)} in {p.upper} and {p.lower}, {p.view}."
    if p.headwear and p.carry:
        text += f" {p.pron} has {p.headwear} on and {p.carry_3rd} {p.carry}."
    elif p.headwear:
        text += f" {p.pron} has {p.headwear} on."
    elif p.carry:
        text += f" {p.pron} {p.carry_3rd} {p.carry}."
    return text


def _t_attribute_list(p: _Phrases, rng: np.random.Generator) -> str:
    items = [p.person, p.upper.split(" ", 1)[1], p.lower.removeprefix("a pair of ").removeprefix("a "), p.shoes]
    if p.headwear:
        items.append(p.headwear.split(" ", 1)[1])
    if p.carry:
        items.append(f"{p.carry_verb} {p.carry}")
    items += [p.posture_ing.split()[0], p.view_title]
    return f"{_pick(rng, ('person', 'pedestrian'))}: " + ", ".join(items) + "."


def _t_has_on(p: _Phrases, rng: np.random.Generator) -> str:
    text = f"this {p.person} has on {p.upper} and {p.lower}, plus {p.shoes}."
    if p.headwear:
        text += f" {p.headwear} covers {p.poss} head."
    if p.carry:
        text += f" {p.pron} is {p.carry_ing} {p.carry}."
    return text + f" the photo catches {'him' if p.pron == 'he' else 'her'} {p.posture_ing}, {p.view}."


_TEMPLATES = (_t_participles, _t_sentences, _t_view_first, _t_posture_first, _t_attribute_list, _t_has_on)


def caption(attrs: dict[str, str], rng: np.random.Generator) -> str:
    """An MSP60k-style English caption stating every attribute (headwear/carrying only when not ``none``)."""
    p = _phrases(attrs, rng)
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    return template(p, rng)


# --------------------------------------------------------------------------- colours and background


def _clip(rgb: Any) -> RGB:
    r, g, b = (int(min(255, max(0, round(float(v))))) for v in rgb)
    return r, g, b


def _shade(rgb: RGB, factor: float) -> RGB:
    return _clip(v * factor for v in rgb)


def _mix(rgb: RGB, other: RGB, t: float) -> RGB:
    return _clip(a * (1 - t) + b * t for a, b in zip(rgb, other, strict=True))


def _garment_rgb(name: str, rng: np.random.Generator) -> RGB:
    # Small per-channel jitter only: the named colour must stay the nearest palette colour.
    base = np.array(COLOR_RGB[name], dtype=np.float64)
    return _clip(base * rng.uniform(0.95, 1.04) + rng.uniform(-10, 10, 3))


def _muted(rng: np.random.Generator) -> RGB:
    return _clip(rng.uniform(60, 200) + rng.uniform(-22, 22, 3))


def _distinct(names: tuple[str, ...], against: tuple[RGB, ...], min_dist: float = 100.0) -> tuple[str, ...]:
    """Colour names at least ``min_dist`` (RGB distance) from every colour in ``against`` (all if none is)."""
    far = tuple(n for n in names if all(np.linalg.norm(np.subtract(COLOR_RGB[n], c)) >= min_dist for c in against))
    return far or names


def _background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    c0 = np.array(_muted(rng), dtype=np.float32)
    c1 = np.array(_muted(rng), dtype=np.float32)
    if rng.random() < 0.5:
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    else:
        t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    arr = np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3)).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.6:  # ground plane
        horizon = int(h * rng.uniform(0.6, 0.9))
        draw.rectangle((0, horizon, w, h), fill=_muted(rng))
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        draw.rectangle(_box(x0, y0, x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.05, 0.4) * h), fill=_muted(rng))
    for _ in range(int(rng.integers(1, 5))):
        pts = [(rng.uniform(0, w), rng.uniform(0, h)), (rng.uniform(0, w), rng.uniform(0, h))]
        draw.line(pts, fill=_muted(rng), width=int(rng.integers(1, 4)))
    return img


def _box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


# --------------------------------------------------------------------------- person geometry


@dataclass(frozen=True)
class _Body:
    cx: float
    top: float
    bottom: float
    u: float  # head height in pixels: the unit of every body proportion
    view: str
    facing: int  # +1 / -1: which way "forward" is on screen in the side view
    ys: float  # shoulder line
    yh: float  # hip line
    yk: float  # knee line
    ya: float  # ankle line
    sh: float  # shoulder half-width
    wa: float  # waist half-width
    hip: float  # hip half-width
    head_rx: float
    head_ry: float
    head_cy: float


def _layout(attrs: dict[str, str], rng: np.random.Generator, h: int, w: int) -> _Body:
    young = attrs["age"] == "young"
    female = attrs["gender"] == "female"
    heads = rng.uniform(6.1, 6.6) if young else rng.uniform(7.0, 7.6)  # person height in head units
    ph = h * rng.uniform(0.80, 0.92)
    if young:
        ph *= rng.uniform(0.86, 0.93)
    if attrs["carrying"] == "umbrella":
        ph *= 0.8  # leave headroom for the canopy
    u = min(ph / heads, w / 3.6)  # keep arms, umbrella and suitcase inside narrow crops
    ph = u * heads
    bottom = h - h * rng.uniform(0.01, 0.05)
    top = bottom - ph
    cx = w / 2 + rng.uniform(-1, 1) * max(0.0, min(0.06 * w, w / 2 - 1.75 * u))
    view = attrs["view"]
    side = view == "side"
    sh = (0.52 if side else (0.82 if female else 0.95)) * u
    wa = (0.46 if side else (0.66 if female else 0.74)) * u
    hip = (0.48 if side else (0.8 if female else 0.72)) * u
    ys = top + 1.25 * u
    yh = top + (3.3 if young else 3.5) * u
    ya = bottom - 0.25 * u
    return _Body(
        cx=cx,
        top=top,
        bottom=bottom,
        u=u,
        view=view,
        facing=1 if rng.random() < 0.5 else -1,
        ys=ys,
        yh=yh,
        yk=yh + 0.5 * (ya - yh),
        ya=ya,
        sh=sh,
        wa=wa,
        hip=hip,
        head_rx=(0.42 if side else 0.4) * u,
        head_ry=0.5 * u,
        head_cy=top + 0.5 * u,
    )


@dataclass(frozen=True)
class _Limb:
    root: tuple[float, float]
    mid: tuple[float, float]
    end: tuple[float, float]


class _Painter:
    """Draws one person onto an image; all geometry comes from a :class:`_Body`."""

    def __init__(self, img: Image.Image, attrs: dict[str, str], body: _Body, rng: np.random.Generator) -> None:
        self.img = img
        self.d = ImageDraw.Draw(img)
        self.a = attrs
        self.b = body
        self.rng = rng
        self.skin = _mix(_SKIN[int(rng.integers(len(_SKIN)))], _SKIN[int(rng.integers(len(_SKIN)))], rng.random())
        self.hair = _HAIR[int(rng.integers(len(_HAIR)))]
        female = attrs["gender"] == "female"
        self.long_hair = rng.random() < (0.85 if female else 0.08)
        self.upper = _garment_rgb(attrs["upper_color"], rng)
        self.lower = _garment_rgb(attrs["lower_color"], rng)
        self.shoes = _garment_rgb(attrs["shoes_color"], rng)
        # headwear never in the hair's or skin's colour, a bag never in the clothes': otherwise it vanishes
        self.hat = _garment_rgb(_pick(rng, _distinct(COLORS, (self.hair, self.skin))), rng)
        self.bag = _garment_rgb(_pick(rng, _distinct(_BAG_COLORS, (self.upper, self.lower))), rng)
        self.phone_at_ear = rng.random() < 0.5 or body.view == "back"
        self.lw = max(1, round(body.u * 0.06))  # detail line width

    # -- small helpers
    def px(self, v: float) -> int:
        return max(1, round(v))

    def rounded_rectangle(self, xy: tuple[float, float, float, float], radius: int, **kwargs: Any) -> None:
        # Pillow refuses an outlined rounded box a few pixels wide (about 1 crop in 25 at 32x32 failed):
        # such a box is drawn square instead; every box Pillow accepts is drawn as before.
        try:
            self.d.rounded_rectangle(xy, radius=radius, **kwargs)
        except ValueError:
            self.d.rectangle(xy, **kwargs)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
        self.d.ellipse(_box(cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)

    def limb(self, limb: _Limb, width: float, fill: RGB) -> None:
        pts = [limb.root, limb.mid, limb.end]
        self.d.line(pts, fill=fill, width=self.px(width), joint="curve")
        r = width / 2
        for x, y in pts:
            self.ellipse(x, y, r, r, fill)

    # -- layout of limbs
    def legs(self) -> list[tuple[float, float, float]]:
        """(hip x, foot x, foot y) per leg, far leg first."""
        b, walking = self.b, self.a["posture"] == "walking"
        u, cx = b.u, b.cx
        if b.view == "side":
            f = b.facing
            if walking:
                return [
                    (cx - 0.05 * f * u, cx - 0.75 * f * u, b.ya - 0.12 * u),
                    (cx + 0.05 * f * u, cx + 0.85 * f * u, b.ya),
                ]
            return [(cx - 0.06 * f * u, cx - 0.08 * f * u, b.ya), (cx + 0.06 * f * u, cx + 0.1 * f * u, b.ya)]
        hx = 0.55 * b.hip
        if walking:
            lift = 0.18 * u if self.rng.random() < 0.5 else -0.18 * u
            return [(cx - hx, cx - 0.6 * u, b.ya - max(lift, 0)), (cx + hx, cx + 0.6 * u, b.ya + min(lift, 0))]
        return [(cx - hx, cx - 0.3 * u, b.ya), (cx + hx, cx + 0.3 * u, b.ya)]

    def arms(self) -> tuple[list[_Limb], int]:
        """Arm polylines (far/left first) and the index of the arm that holds the carried object."""
        b, walking, carry = self.b, self.a["posture"] == "walking", self.a["carrying"]
        u, cx, ys, yh = b.u, b.cx, b.ys, b.yh
        if b.view == "side":
            f = b.facing
            sx = cx + 0.05 * f * u
            root = (sx, ys + 0.2 * u)
            if walking:
                far = _Limb(root, (sx - 0.3 * f * u, ys + 1.25 * u), (sx - 0.65 * f * u, yh + 0.1 * u))
                near = _Limb(root, (sx + 0.35 * f * u, ys + 1.2 * u), (sx + 0.8 * f * u, yh - 0.15 * u))
            else:
                far = _Limb(root, (sx - 0.05 * f * u, ys + 1.3 * u), (sx - 0.02 * f * u, yh + 0.25 * u))
                near = _Limb(root, (sx + 0.05 * f * u, ys + 1.3 * u), (sx + 0.1 * f * u, yh + 0.25 * u))
            if carry == "umbrella":
                near = _Limb(root, (sx + 0.2 * f * u, ys + 1.2 * u), (sx + 0.6 * f * u, ys + 0.8 * u))
            elif carry == "phone":
                if self.phone_at_ear:
                    near = _Limb(root, (sx + 0.25 * f * u, ys + 1.0 * u), (cx + 0.3 * f * u, b.head_cy + 0.15 * u))
                else:
                    near = _Limb(root, (sx + 0.15 * f * u, ys + 1.25 * u), (sx + 0.7 * f * u, ys + 0.9 * u))
            elif carry == "suitcase":  # trailing behind, held by the far arm
                far = _Limb(root, (sx - 0.2 * f * u, ys + 1.25 * u), (sx - 0.55 * f * u, yh + 0.2 * u))
                return [far, near], 0
            return [far, near], 1
        out = []
        for s in (-1, 1):
            root = (cx + s * (b.sh - 0.2 * u), ys + 0.22 * u)
            elbow = (cx + s * (b.sh + 0.05 * u), ys + 1.3 * u)
            hand = (cx + s * (b.sh + 0.1 * u), yh + 0.2 * u)
            if walking:
                if s < 0:  # this arm swings forward, which reads as inward and up from the front or back
                    elbow, hand = (
                        (cx + s * (b.sh + 0.02 * u), ys + 1.25 * u),
                        (cx + s * (b.sh - 0.2 * u), yh - 0.05 * u),
                    )
                else:
                    elbow, hand = (cx + s * (b.sh + 0.12 * u), ys + 1.3 * u), (cx + s * (b.sh + 0.25 * u), yh + 0.1 * u)
            out.append(_Limb(root, elbow, hand))
        root = out[1].root
        if carry == "umbrella":
            out[1] = _Limb(root, (cx + b.sh + 0.15 * u, ys + 1.3 * u), (cx + 0.55 * b.sh, ys + 0.95 * u))
        elif carry == "phone":
            if self.phone_at_ear:
                out[1] = _Limb(
                    root, (cx + b.sh + 0.25 * u, ys + 0.9 * u), (cx + b.head_rx + 0.1 * u, b.head_cy + 0.15 * u)
                )
            else:
                out[1] = _Limb(root, (cx + b.sh + 0.1 * u, ys + 1.45 * u), (cx + 0.3 * u, ys + 1.05 * u))
        elif carry in ("handbag", "suitcase"):
            out[1] = _Limb(root, (cx + b.sh + 0.1 * u, ys + 1.3 * u), (cx + b.sh + 0.2 * u, yh + 0.25 * u))
        return out, 1

    # -- body parts
    def draw_leg(self, hip_x: float, foot_x: float, foot_y: float, shade: float) -> None:
        b, u, lower = self.b, self.b.u, self.a["lower"]
        top_w, bot_w = (0.3 if b.view != "side" else 0.34) * u, 0.18 * u
        poly = [(hip_x - top_w, b.yh), (hip_x + top_w, b.yh), (foot_x + bot_w, foot_y), (foot_x - bot_w, foot_y)]
        cloth = _shade(self.lower, shade)
        if lower in ("shorts", "skirt"):
            self.d.polygon(poly, fill=_shade(self.skin, shade))
            if lower == "shorts":
                t = 0.42
                kx, ky = hip_x + (foot_x - hip_x) * t, b.yh + (foot_y - b.yh) * t
                kw = top_w + (bot_w - top_w) * t + 0.03 * u
                self.d.polygon([poly[0], poly[1], (kx + kw, ky), (kx - kw, ky)], fill=cloth)
        else:
            self.d.polygon(poly, fill=cloth)
            if lower == "jeans":  # outer seams, a lighter centre fade and rolled-up cuffs
                seam = _mix(cloth, (235, 225, 200), 0.45)
                out = 1 if hip_x >= b.cx else -1
                self.d.line(
                    [(hip_x + out * (top_w - 1), b.yh), (foot_x + out * (bot_w - 1), foot_y)], fill=seam,
                    width=max(2, self.lw),
                )
                # the cuff: a light band of 0.22u above the shoe, wider than the leg (about 3 px at 192x96;
                # a 1 px seam alone left jeans and trousers apart at chance at that size)
                light = sum(cloth) > 540  # on white or pale denim a lighter cuff would not show
                cuff = _shade(cloth, 0.7) if light else _mix(cloth, (235, 235, 235), 0.5)
                self.d.polygon(
                    [(foot_x - bot_w - 0.04 * u, foot_y - 0.22 * u), (foot_x + bot_w + 0.04 * u, foot_y - 0.22 * u),
                     (foot_x + bot_w + 0.04 * u, foot_y), (foot_x - bot_w - 0.04 * u, foot_y)],
                    fill=cuff,
                )
                self.d.line(
                    [(hip_x, b.yh + 0.3 * u), (foot_x, foot_y - 0.1 * u)],
                    fill=_mix(cloth, (255, 255, 255), 0.12),
                    width=self.lw,
                )
                self.d.line(
                    [(foot_x - bot_w, foot_y - 0.05 * u), (foot_x + bot_w, foot_y - 0.05 * u)], fill=seam, width=self.lw
                )
            else:  # pressed crease
                self.d.line([(hip_x, b.yh + 0.2 * u), (foot_x, foot_y)], fill=_shade(cloth, 0.82), width=self.lw)
        # shoe
        if b.view == "side":
            self.ellipse(foot_x + 0.14 * b.facing * u, foot_y + 0.12 * u, 0.36 * u, 0.14 * u, _shade(self.shoes, shade))
        else:
            self.ellipse(foot_x, foot_y + 0.12 * u, 0.24 * u, 0.14 * u, _shade(self.shoes, shade))

    def draw_hips(self) -> None:
        b, u, lower = self.b, self.b.u, self.a["lower"]
        if lower == "skirt":
            return
        hw = b.hip if b.view != "side" else b.wa
        self.d.polygon(
            [
                (b.cx - hw, b.yh - 0.1 * u),
                (b.cx + hw, b.yh - 0.1 * u),
                (b.cx + 0.85 * hw, b.yh + 0.55 * u),
                (b.cx - 0.85 * hw, b.yh + 0.55 * u),
            ],
            fill=self.lower,
        )
        if lower == "jeans" and b.view == "front":  # front pocket curves
            seam = _mix(self.lower, (235, 225, 200), 0.45)
            for s in (-1, 1):
                x0 = b.cx + s * 0.75 * hw
                self.d.arc(
                    _box(x0 - 0.35 * u, b.yh - 0.45 * u, x0 + 0.35 * u, b.yh + 0.25 * u),
                    0 if s < 0 else 90,
                    90 if s < 0 else 180,
                    fill=seam,
                    width=self.lw,
                )

    def draw_skirt(self) -> None:
        b, u = self.b, self.b.u
        hw = b.hip if b.view != "side" else b.wa
        hem = b.yh + 0.5 * (b.ya - b.yh)
        flare = 1.35 if b.view != "side" else 1.6
        self.d.polygon(
            [
                (b.cx - hw, b.yh - 0.15 * u),
                (b.cx + hw, b.yh - 0.15 * u),
                (b.cx + flare * hw, hem),
                (b.cx - flare * hw, hem),
            ],
            fill=self.lower,
        )
        self.d.line([(b.cx - flare * hw, hem), (b.cx + flare * hw, hem)], fill=_shade(self.lower, 0.75), width=self.lw)

    def torso_poly(self) -> list[tuple[float, float]]:
        b, u = self.b, self.b.u
        hem = b.yh + 0.1 * u
        if b.view == "side":
            f = b.facing
            chest = 0.08 * f * u
            return [
                (b.cx - b.sh, b.ys + 0.1 * u),
                (b.cx + b.sh + chest, b.ys + 0.1 * u),
                (b.cx + b.wa + chest, hem),
                (b.cx - b.wa, hem),
            ]
        return [
            (b.cx - b.sh + 0.2 * u, b.ys),
            (b.cx + b.sh - 0.2 * u, b.ys),
            (b.cx + b.sh, b.ys + 0.3 * u),
            (b.cx + b.wa, hem),
            (b.cx - b.wa, hem),
            (b.cx - b.sh, b.ys + 0.3 * u),
        ]

    def draw_torso(self) -> None:
        b, u, kind = self.b, self.b.u, self.a["upper"]
        if kind == "coat":  # the coat's skirt over the upper thighs
            hw = b.wa if b.view != "side" else b.wa * 1.05
            # mid-thigh: longer than any jacket, yet shorts (to 0.84 of hip-to-knee) and skirts (to the knee)
            # still show below it. Down to the knee, as before, it hid them whole, so the lower garment's
            # type and colour were illegible on every coat wearer (lower colour 25% on such crops).
            bottom = b.yh + 0.55 * (b.yk - b.yh)
            self.d.polygon(
                [
                    (b.cx - hw, b.yh - 0.1 * u),
                    (b.cx + hw, b.yh - 0.1 * u),
                    (b.cx + 1.25 * hw, bottom),
                    (b.cx - 1.25 * hw, bottom),
                ],
                fill=self.upper,
            )
            if b.view == "back":
                self.d.line([(b.cx, b.yh + 0.3 * u), (b.cx, bottom)], fill=_shade(self.upper, 0.6), width=self.lw)
            elif b.view == "front":
                self.d.line([(b.cx, b.yh), (b.cx, bottom)], fill=_shade(self.upper, 0.6), width=self.lw)
        self.d.polygon(self.torso_poly(), fill=self.upper)
        # soft shading on one flank keeps the colour but adds volume
        s = -1 if b.view != "side" else b.facing
        self.d.polygon(
            [
                (b.cx + s * b.sh, b.ys + 0.3 * u),
                (b.cx + s * (b.sh - 0.18 * u), b.ys + 0.3 * u),
                (b.cx + s * (b.wa - 0.15 * u), b.yh + 0.1 * u),
                (b.cx + s * b.wa, b.yh + 0.1 * u),
            ],
            fill=_shade(self.upper, 0.85),
        )
        getattr(self, f"_cue_{kind.replace('-', '_')}")()

    def _neck_ring(self, fill: RGB) -> None:
        b, u = self.b, self.b.u
        if b.view == "front":
            self.d.chord(
                _box(b.cx - 0.28 * u, b.ys - 0.2 * u, b.cx + 0.28 * u, b.ys + 0.25 * u), 0, 180, fill=self.skin
            )
            self.d.arc(
                _box(b.cx - 0.3 * u, b.ys - 0.22 * u, b.cx + 0.3 * u, b.ys + 0.27 * u), 0, 180, fill=fill, width=self.lw
            )

    def _cue_t_shirt(self) -> None:
        self._neck_ring(_shade(self.upper, 0.8))

    def _cue_shirt(self) -> None:
        b, u = self.b, self.b.u
        collar = _mix(self.upper, (255, 255, 255), 0.3)
        if b.view == "front":
            self.d.polygon(
                [(b.cx, b.ys + 0.35 * u), (b.cx - 0.32 * u, b.ys - 0.05 * u), (b.cx - 0.05 * u, b.ys - 0.05 * u)],
                fill=collar,
            )
            self.d.polygon(
                [(b.cx, b.ys + 0.35 * u), (b.cx + 0.32 * u, b.ys - 0.05 * u), (b.cx + 0.05 * u, b.ys - 0.05 * u)],
                fill=collar,
            )
            dark = _shade(self.upper, 0.55)
            r = max(0.8, 0.05 * u)
            for i in range(4):
                self.ellipse(b.cx, b.ys + 0.55 * u + i * (b.yh - b.ys - 0.6 * u) / 3.5, r, r, dark)
        elif b.view == "back":
            self.d.rectangle(_box(b.cx - 0.3 * u, b.ys - 0.05 * u, b.cx + 0.3 * u, b.ys + 0.1 * u), fill=collar)
        else:
            f = b.facing
            self.d.polygon(
                [
                    (b.cx + 0.1 * f * u, b.ys - 0.05 * u),
                    (b.cx + 0.35 * f * u, b.ys + 0.3 * u),
                    (b.cx + 0.35 * f * u, b.ys - 0.05 * u),
                ],
                fill=collar,
            )

    def _cue_jacket(self) -> None:
        b, u = self.b, self.b.u
        dark = _shade(self.upper, 0.5)
        if b.view == "front":
            self.d.line([(b.cx, b.ys + 0.1 * u), (b.cx, b.yh + 0.1 * u)], fill=dark, width=max(self.lw, 2))
            for s in (-1, 1):
                self.d.line(
                    [(b.cx + s * 0.32 * u, b.ys), (b.cx + s * 0.05 * u, b.ys + 0.55 * u)],
                    fill=_shade(self.upper, 0.7),
                    width=self.lw,
                )
                self.d.line(
                    [(b.cx + s * 0.55 * b.wa, b.yh - 0.45 * u), (b.cx + s * 0.25 * b.wa, b.yh - 0.45 * u)],
                    fill=dark,
                    width=self.lw,
                )
        elif b.view == "side":
            x = b.cx + b.facing * (b.sh - 0.06 * u)
            self.d.line(
                [(x, b.ys + 0.15 * u), (b.cx + b.facing * (b.wa - 0.04 * u), b.yh + 0.1 * u)],
                fill=dark,
                width=max(self.lw, 2),
            )
        else:
            self.d.line(
                [(b.cx - b.sh + 0.2 * u, b.ys + 0.45 * u), (b.cx + b.sh - 0.2 * u, b.ys + 0.45 * u)],
                fill=_shade(self.upper, 0.7),
                width=self.lw,
            )
        self.d.rectangle(
            _box(b.cx - 0.3 * u, b.ys - 0.12 * u, b.cx + 0.3 * u, b.ys + 0.05 * u), fill=_shade(self.upper, 0.85)
        )

    def _cue_coat(self) -> None:
        b, u = self.b, self.b.u
        dark = _shade(self.upper, 0.55)
        self.d.rectangle(
            _box(b.cx - b.wa, b.yh - 0.15 * u, b.cx + b.wa, b.yh + 0.02 * u), fill=_shade(self.upper, 0.7)
        )  # belt
        if b.view == "front":
            r = max(0.8, 0.06 * u)
            for s in (-1, 1):
                self.d.line([(b.cx + s * 0.35 * u, b.ys - 0.05 * u), (b.cx, b.ys + 0.7 * u)], fill=dark, width=self.lw)
                for i in range(3):
                    self.ellipse(b.cx + s * 0.22 * u, b.ys + 0.9 * u + i * 0.55 * u, r, r, dark)

    def _cue_hoodie(self) -> None:
        b, u = self.b, self.b.u
        dark = _shade(self.upper, 0.65)
        if b.view == "front":
            light = _mix(self.upper, (255, 255, 255), 0.55)
            for s in (-1, 1):
                self.d.line(
                    [(b.cx + s * 0.12 * u, b.ys + 0.05 * u), (b.cx + s * 0.14 * u, b.ys + 0.85 * u)],
                    fill=light,
                    width=self.lw,
                )
            self.d.rectangle(
                _box(b.cx - 0.6 * b.wa, b.yh - 0.85 * u, b.cx + 0.6 * b.wa, b.yh - 0.15 * u),
                outline=dark,
                width=self.lw,
            )
        elif b.view == "back":  # hood lying on the upper back
            self.ellipse(b.cx, b.ys + 0.3 * u, 0.55 * u, 0.42 * u, _shade(self.upper, 0.88))
            self.d.arc(
                _box(b.cx - 0.55 * u, b.ys - 0.12 * u, b.cx + 0.55 * u, b.ys + 0.72 * u),
                0,
                180,
                fill=dark,
                width=self.lw,
            )
        else:
            x = b.cx - b.facing * 0.3 * u
            self.ellipse(x, b.ys + 0.1 * u, 0.35 * u, 0.38 * u, _shade(self.upper, 0.88))
        self._ribbing(b.yh - 0.12 * u, b.yh + 0.1 * u, dark)

    def _cue_sweater(self) -> None:
        b, u = self.b, self.b.u
        self._neck_ring(_shade(self.upper, 0.7))
        self._ribbing(b.yh - 0.3 * u, b.yh + 0.1 * u, _shade(self.upper, 0.65))

    def _ribbing(self, y0: float, y1: float, fill: RGB) -> None:
        b = self.b
        self.d.rectangle(_box(b.cx - b.wa, y0, b.cx + b.wa, y1), fill=_shade(self.upper, 0.88))
        step = max(2, round(b.u * 0.12))
        for x in range(int(b.cx - b.wa) + 1, int(b.cx + b.wa), step):
            self.d.line([(x, y0), (x, y1)], fill=fill, width=1)

    def draw_hood_behind_head(self) -> None:
        b, u = self.b, self.b.u
        if self.a["upper"] == "hoodie" and b.view == "front":
            self.ellipse(b.cx, b.ys - 0.1 * u, 1.45 * b.head_rx, 0.48 * u, _shade(self.upper, 0.85))

    def draw_arm(self, limb: _Limb, shade: float) -> None:
        u, kind = self.b.u, self.a["upper"]
        width = 0.3 * u
        skin, cloth = _shade(self.skin, shade), _shade(self.upper, shade)
        if kind == "t-shirt":
            self.limb(limb, width * 0.85, skin)
            (x0, y0), (x1, y1) = limb.root, limb.mid
            sleeve = (x0 + 0.45 * (x1 - x0), y0 + 0.45 * (y1 - y0))
            self.d.line([limb.root, sleeve], fill=cloth, width=self.px(width * 1.1))
            self.ellipse(*limb.root, width * 0.55, width * 0.55, cloth)
        else:
            self.limb(limb, width, cloth)
            if kind in ("sweater", "hoodie"):  # ribbed cuff
                (x1, y1), (x2, y2) = limb.mid, limb.end
                cuff = (x1 + 0.8 * (x2 - x1), y1 + 0.8 * (y2 - y1))
                self.d.line([cuff, limb.end], fill=_shade(cloth, 0.75), width=self.px(width))
        self.ellipse(*limb.end, 0.16 * u, 0.16 * u, skin)

    def draw_hair_behind(self) -> None:
        """Long hair hanging behind the neck; drawn before the torso so the shoulders hide its end."""
        b, u = self.b, self.b.u
        if not self.long_hair or b.view == "back":
            return
        cx, rx = b.cx, b.head_rx
        # past the shoulders and well beside the face: at 192x96 the old fall (1.15x the head's half
        # width, to 0.6u below the shoulders) showed as a pixel-wide strip each side of the face, and
        # hair length is the one gender cue a side view has
        x0, x1 = cx - 1.45 * rx, cx + 1.45 * rx
        if b.view == "side":
            x0, x1 = (cx - 1.3 * rx, cx + 0.1 * rx) if b.facing > 0 else (cx - 0.1 * rx, cx + 1.3 * rx)
        self.rounded_rectangle(
            _box(x0, b.head_cy - 0.3 * b.head_ry, x1, b.ys + 1.1 * u),
            radius=self.px(min(0.3 * u, (x1 - x0) / 2)),
            fill=self.hair,
        )

    def draw_hair_over_shoulders(self) -> None:
        """Long hair falling over the shoulders (front: a lock each side of the neck; side: down the back).

        Drawn after the torso: hair drawn only behind it showed at 192x96 as a pixel-wide strip beside
        the face, and hair length is the one gender cue a side view has. It ends above
        :meth:`torso_box`, which keeps only the upper garment's colour.
        """
        b, u = self.b, self.b.u
        if not self.long_hair or b.view == "back":
            return
        cx, rx, bottom = b.cx, b.head_rx, b.ys + 0.6 * u
        if b.view == "side":
            f = b.facing
            locks = [(cx - f * 1.25 * rx, cx - f * 0.45 * rx)]
        else:
            locks = [(cx - 1.45 * rx, cx - 0.75 * rx), (cx + 0.75 * rx, cx + 1.45 * rx)]
        for xa, xb in locks:
            self.rounded_rectangle(_box(min(xa, xb), b.head_cy, max(xa, xb), bottom),
                                     radius=self.px(min(0.15 * u, abs(xb - xa) / 2)), fill=self.hair)

    def draw_head(self) -> None:
        b, u = self.b, self.b.u
        cx, cy, rx, ry = b.cx, b.head_cy, b.head_rx, b.head_ry
        self.d.rectangle(_box(cx - 0.16 * u, cy + 0.3 * u, cx + 0.16 * u, b.ys + 0.1 * u), fill=_shade(self.skin, 0.9))
        if b.view == "back":
            self.ellipse(cx, cy, rx, ry, self.hair)
            if self.long_hair:
                self.rounded_rectangle(
                    _box(cx - 1.2 * rx, cy, cx + 1.2 * rx, b.ys + 1.0 * u),
                    radius=self.px(min(0.3 * u, rx)),
                    fill=self.hair,
                )
            return
        self.ellipse(cx, cy, rx, ry, self.skin)
        self.d.chord(_box(cx - 1.04 * rx, cy - 1.06 * ry, cx + 1.04 * rx, cy + 0.45 * ry), 180, 360, fill=self.hair)
        eye = _shade(self.skin, 0.25)
        er = max(0.8, 0.06 * u)
        if b.view == "front":
            for s in (-1, 1):
                self.ellipse(cx + s * 0.15 * u, cy + 0.02 * u, er, er, eye)
            self.d.line(
                [(cx - 0.1 * u, cy + 0.27 * u), (cx + 0.1 * u, cy + 0.27 * u)],
                fill=_shade(self.skin, 0.6),
                width=self.lw,
            )
        else:
            f = b.facing
            # back of the skull is hair, the face side shows an eye, nose and ear
            self.d.pieslice(
                _box(cx - 1.04 * rx, cy - 1.06 * ry, cx + 1.04 * rx, cy + 0.8 * ry),
                90 if f > 0 else 270,
                270 if f > 0 else 450,
                fill=self.hair,
            )
            self.ellipse(cx - 0.05 * f * u, cy + 0.05 * u, 0.08 * u, 0.12 * u, _shade(self.skin, 0.85))
            self.ellipse(cx + 0.25 * f * u, cy, er, er, eye)
            self.d.polygon(
                [
                    (cx + f * 0.92 * rx, cy - 0.05 * u),
                    (cx + f * (rx + 0.12 * u), cy + 0.12 * u),
                    (cx + f * 0.9 * rx, cy + 0.17 * u),
                ],
                fill=self.skin,
            )

    def draw_headwear(self) -> None:
        b, u, kind = self.b, self.b.u, self.a["headwear"]
        cx, cy, rx, ry = b.cx, b.head_cy, b.head_rx, b.head_ry
        dark = _shade(self.hat, 0.7)
        if kind == "cap":
            self.d.chord(_box(cx - 1.08 * rx, cy - 1.12 * ry, cx + 1.08 * rx, cy + 0.3 * ry), 180, 360, fill=self.hat)
            if b.view == "front":
                self.ellipse(cx, cy - 0.38 * ry, 1.1 * rx, 0.16 * u, dark)
            elif b.view == "side":
                f = b.facing
                self.d.rectangle(
                    _box(cx + f * 0.6 * rx, cy - 0.5 * ry, cx + f * (rx + 0.45 * u), cy - 0.3 * ry), fill=dark
                )
            else:
                self.d.line([(cx - rx, cy - 0.42 * ry), (cx + rx, cy - 0.42 * ry)], fill=dark, width=self.lw)
        elif kind == "hat":
            self.rounded_rectangle(
                _box(cx - 0.85 * rx, cy - 1.5 * ry, cx + 0.85 * rx, cy - 0.45 * ry),
                radius=self.px(0.2 * u),
                fill=self.hat,
            )
            self.d.rectangle(_box(cx - 0.85 * rx, cy - 0.75 * ry, cx + 0.85 * rx, cy - 0.5 * ry), fill=dark)
            self.ellipse(cx, cy - 0.5 * ry, 1.95 * rx, 0.13 * u, self.hat)
        elif kind == "helmet":
            self.d.chord(_box(cx - 1.2 * rx, cy - 1.22 * ry, cx + 1.2 * rx, cy + 0.55 * ry), 180, 360, fill=self.hat)
            self.d.line(
                [(cx - 1.2 * rx, cy - 0.32 * ry), (cx + 1.2 * rx, cy - 0.32 * ry)], fill=dark, width=max(2, self.lw)
            )
            self.ellipse(cx - 0.35 * rx, cy - 0.8 * ry, 0.25 * rx, 0.12 * ry, _mix(self.hat, (255, 255, 255), 0.5))

    # -- carried objects
    def draw_backpack(self, behind: bool) -> None:
        b, u = self.b, self.b.u
        if b.view == "front":
            if behind:
                self.d.rectangle(
                    _box(b.cx - b.sh - 0.12 * u, b.ys + 0.3 * u, b.cx + b.sh + 0.12 * u, b.yh - 0.4 * u), fill=self.bag
                )
            else:
                for s in (-1, 1):
                    self.d.line(
                        [(b.cx + s * (b.sh - 0.35 * u), b.ys), (b.cx + s * (b.sh - 0.3 * u), b.ys + 1.3 * u)],
                        fill=_shade(self.bag, 0.8),
                        width=self.px(0.12 * u),
                    )
        elif b.view == "back" and not behind:
            self.rounded_rectangle(
                _box(b.cx - 0.62 * u, b.ys + 0.2 * u, b.cx + 0.62 * u, b.yh - 0.35 * u),
                radius=self.px(0.18 * u),
                fill=self.bag,
            )
            self.rounded_rectangle(
                _box(b.cx - 0.4 * u, b.yh - 1.0 * u, b.cx + 0.4 * u, b.yh - 0.5 * u),
                radius=self.px(0.1 * u),
                outline=_shade(self.bag, 0.6),
                width=self.lw,
            )
        elif b.view == "side":
            f = b.facing
            if behind:
                self.rounded_rectangle(
                    _box(b.cx - f * (b.sh + 0.5 * u), b.ys + 0.25 * u, b.cx - f * (b.sh - 0.2 * u), b.yh - 0.3 * u),
                    radius=self.px(0.15 * u),
                    fill=self.bag,
                )
            else:
                self.d.line(
                    [(b.cx, b.ys + 0.05 * u), (b.cx - f * 0.3 * u, b.ys + 1.1 * u)],
                    fill=_shade(self.bag, 0.8),
                    width=self.px(0.12 * u),
                )

    def draw_carried(self, hand: tuple[float, float]) -> None:
        b, u, carry = self.b, self.b.u, self.a["carrying"]
        hx, hy = hand
        # Carried objects get a dark outline: the background's boxes have none, and at 192x96 a
        # plain coloured box in the hand read as one of them (handbag, suitcase and nothing were
        # told apart at chance among themselves, by the attribute heads even on training crops).
        edge, thick = _shade(self.bag, 0.4), max(2, self.lw)
        if carry == "handbag":
            self.d.arc(
                _box(hx - 0.26 * u, hy - 0.15 * u, hx + 0.26 * u, hy + 0.55 * u),
                180,
                360,
                fill=edge,
                width=thick,
            )
            self.d.polygon(
                [
                    (hx - 0.34 * u, hy + 0.2 * u),
                    (hx + 0.34 * u, hy + 0.2 * u),
                    (hx + 0.46 * u, hy + 1.0 * u),
                    (hx - 0.46 * u, hy + 1.0 * u),
                ],
                fill=self.bag,
                outline=edge,
                width=self.lw,
            )
            self.d.line([(hx - 0.34 * u, hy + 0.45 * u), (hx + 0.34 * u, hy + 0.45 * u)], fill=edge, width=self.lw)
        elif carry == "suitcase":
            top = hy + 0.45 * u
            x0 = hx - 0.45 * u
            self.d.line([(hx - 0.1 * u, hy), (hx - 0.1 * u, top)], fill=(60, 60, 60), width=thick)
            self.d.line([(hx + 0.1 * u, hy), (hx + 0.1 * u, top)], fill=(60, 60, 60), width=thick)
            bottom = min(b.bottom - 0.2 * u, top + 1.5 * u)
            self.rounded_rectangle(
                _box(x0, top, x0 + 0.9 * u, bottom), radius=self.px(0.1 * u), fill=self.bag, outline=edge,
                width=self.lw,
            )
            for wx in (x0 + 0.18 * u, x0 + 0.72 * u):  # wheels
                self.ellipse(wx, bottom + 0.08 * u, 0.12 * u, 0.12 * u, (25, 25, 25))
            self.d.line(
                [(x0 + 0.2 * u, top + 0.2 * u), (x0 + 0.2 * u, top + 1.3 * u)],
                fill=_shade(self.bag, 0.7),
                width=self.lw,
            )
        elif carry == "phone":
            # 0.3u x 0.54u: at 192x96 a 3x6 px phone was lost in the hand; now about 4x8 px with a lit screen
            w, h = 0.15 * u, 0.27 * u
            self.d.rectangle(_box(hx - w, hy - h, hx + w, hy + h), fill=(22, 22, 26))
            self.d.rectangle(_box(hx - 0.7 * w, hy - 0.8 * h, hx + 0.7 * w, hy + 0.6 * h), fill=(110, 160, 215))
        elif carry == "umbrella":
            radius = min(1.45 * u, self.img.width * 0.48)
            rim = b.top - 0.15 * u
            peak = rim - 0.75 * radius
            self.d.line([(hx, hy + 0.1 * u), (hx, peak - 0.15 * u)], fill=(50, 50, 50), width=max(1, self.lw))
            self.d.pieslice(_box(hx - radius, peak, hx + radius, rim + 0.75 * radius), 180, 360, fill=self.bag)
            rib = _shade(self.bag, 0.7)
            for t in (-0.55, 0.0, 0.55):
                self.d.line([(hx, peak), (hx + t * radius, rim)], fill=rib, width=1)
            self.d.arc(_box(hx - 0.15 * u, hy, hx + 0.05 * u, hy + 0.3 * u), 0, 180, fill=(50, 50, 50), width=self.lw)

    # -- whole person
    def draw(self) -> None:
        b = self.b
        carry = self.a["carrying"]
        arms, holding = self.arms()
        legs = self.legs()
        if carry == "backpack":
            self.draw_backpack(behind=True)
        if b.view == "side":
            self.draw_arm(arms[0], 0.8)
            if carry == "suitcase":
                self.draw_carried(arms[0].end)
            self.draw_leg(*legs[0], shade=0.8)
            self.draw_leg(*legs[1], shade=1.0)
        else:
            for leg in legs:
                self.draw_leg(*leg, shade=1.0)
        self.draw_hips()
        if self.a["lower"] == "skirt":
            self.draw_skirt()
        self.draw_hair_behind()
        self.draw_hood_behind_head()
        self.draw_torso()
        self.draw_hair_over_shoulders()
        if carry == "backpack":
            self.draw_backpack(behind=False)
        for i, arm in enumerate(arms):
            if b.view == "side" and i == 0:
                continue
            self.draw_arm(arm, 1.0)
        self.draw_head()
        self.draw_headwear()
        if carry not in ("none", "backpack") and not (b.view == "side" and carry == "suitcase"):
            self.draw_carried(arms[holding].end)

    def torso_box(self) -> tuple[int, int, int, int]:
        """Inner torso rectangle (x0, y0, x1, y1) that shows only the upper garment's main colour."""
        b, u = self.b, self.b.u
        y0, y1 = round(b.ys + 0.65 * u), round(b.yh - 0.45 * u)
        if b.view == "side":  # the near arm hangs over the front half of the torso
            x0, x1 = sorted((b.cx - b.facing * 0.45 * u, b.cx - b.facing * 0.17 * u))
            return round(x0), y0, round(x1), y1
        half = min(b.sh, b.wa) * 0.55
        return round(b.cx - half), y0, round(b.cx + half), y1


# --------------------------------------------------------------------------- degradations and rendering


def _soften(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, bool]:
    """A quarter of crops at low resolution, else three in ten slightly blurred; (image, whether softened)."""
    w, h = img.size
    low_res = rng.random() < 0.25
    if low_res:  # at most 0.45 of the size (0.3 erased caps and phones at 192x96)
        f = rng.uniform(0.45, 0.8)
        small = img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BILINEAR)
        img = small.resize((w, h), Image.Resampling.BILINEAR)
    blur = rng.random() < 0.3 and not low_res  # never both: together they left a coloured blob
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    return img, low_res or blur


def _noise(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return arr + rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(rng.uniform(2.0, 9.0))


def _degrade(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    img, _ = _soften(img, rng)
    jitter, noisy = rng.random() < 0.5, rng.random() < 0.35
    if not (jitter or noisy):
        return img
    arr = np.asarray(img, dtype=np.float32)
    if jitter:
        contrast, brightness = rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15)
        mean = float(arr.mean())
        arr = (arr - mean) * contrast + mean * brightness
    if noisy:
        arr = _noise(arr, rng)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _motion_blur(arr: np.ndarray, length: int, angle: float) -> np.ndarray:
    """The mean of ``length`` copies of ``arr`` shifted along ``angle``: a camera or subject moving."""
    h, w = arr.shape[:2]
    pad = length
    padded = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = np.zeros_like(arr)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, length):
        ox, oy = round(t * np.cos(angle)), round(t * np.sin(angle))
        out += padded[pad + oy:pad + oy + h, pad + ox:pad + ox + w]
    return out / np.float32(length)


def _degrade_camera(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The street recipe's camera: :func:`_degrade`'s steps with wider exposure, plus motion blur,
    a white-balance cast and JPEG re-encoding (last, as a camera compresses what its sensor saw)."""
    img, softened = _soften(img, rng)
    arr = np.asarray(img, dtype=np.float32)
    if not softened and rng.random() < 0.2:  # one softening at most, as in _degrade
        arr = _motion_blur(arr, int(rng.integers(3, 7)), float(rng.uniform(0.0, np.pi)))
    if rng.random() < 0.5:  # white balance: a warm, cool or green cast that keeps the overall level
        gains = rng.uniform(0.88, 1.12, 3)
        arr = arr * (gains / gains.mean()).astype(np.float32)
    if rng.random() < 0.6:  # exposure: dim interiors and bright streets
        contrast, brightness = rng.uniform(0.8, 1.15), rng.uniform(0.7, 1.2)
        mean = float(arr.mean())
        arr = (arr - mean) * contrast + mean * brightness
    if rng.random() < 0.35:
        arr = _noise(arr, rng)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.7:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(30, 91)))
        buf.seek(0)
        with Image.open(buf) as im:
            img = im.convert("RGB")
    return img


_OCCLUSION_SHARE = 0.2  # street crops with one side partly hidden


def _occlude(img: Image.Image, rng: np.random.Generator, torso: tuple[int, int, int, int]) -> Image.Image:
    """Hide a strip at one side of the crop behind a nearer person or a street object, never over ``torso``."""
    w, h = img.size
    right = rng.random() < 0.5
    room = (w - torso[2] if right else torso[0]) - 2  # free width between the torso box and that edge
    visible = min(room, round(w * rng.uniform(0.12, 0.3)))
    if visible < 3:
        return img
    if rng.random() < 0.6:  # another pedestrian, a little nearer the camera, mostly outside the crop
        other = _sample_street(rng)
        scale = rng.uniform(1.0, 1.25)
        lh, lw = round(h * scale), round(w * scale)
        layer = Image.new("RGBA", (lw, lh), (0, 0, 0, 0))
        _Painter(layer, other, _layout(other, rng, lh, lw), rng).draw()
        bbox = layer.getchannel("A").getbbox()
        if bbox is None:
            return img
        dx = w - visible - bbox[0] if right else visible - bbox[2]
        img.paste(layer, (dx, h - lh), layer)
        return img
    draw = ImageDraw.Draw(img)
    fill = _shade(_muted(rng), rng.uniform(0.45, 1.0))
    x0, x1 = (w - visible, w) if right else (0, visible)
    if rng.random() < 0.5:  # a post, a door frame or a wall edge: full height
        draw.rectangle((x0, 0, x1, h), fill=fill)
        edge = x0 if right else x1 - 1
        draw.line([(edge, 0), (edge, h)], fill=_shade(fill, 0.7), width=max(1, visible // 6))
    else:  # a bin, a bench or a car's bonnet: low, from the bottom edge
        top = h - round(h * rng.uniform(0.12, 0.3))
        draw.rounded_rectangle((x0, top, x1, h + 8), radius=visible // 4, fill=fill)
    return img


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or min(int(size[0]), int(size[1])) < 32:
        raise ValueError(f"size must be (height, width) with both >= 32, got {tuple(size)!r}")
    return int(size[0]), int(size[1])


def _style(priors: str, photo_backgrounds: float | None) -> tuple[bool, float]:
    """(camera realism, share of photographic backgrounds) of a recipe; street turns both on by default."""
    if priors not in PRIORS:
        raise ValueError(f"priors must be one of {', '.join(PRIORS)}, got {priors!r}")
    share = (0.5 if priors == "street" else 0.0) if photo_backgrounds is None else float(photo_backgrounds)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"photo_backgrounds must be in [0, 1], got {photo_backgrounds}")
    return priors == "street", share


def _render(
    attrs: dict[str, str], rng: np.random.Generator, size: tuple[int, int], degrade: bool, priors: str = "uniform",
    photo_backgrounds: float | None = None,
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    h, w = _check_size(size)
    missing = [k for k in ATTRIBUTE_VALUES if attrs.get(k) not in ATTRIBUTE_VALUES[k]]
    if missing:
        raise ValueError(f"invalid or missing attribute values for: {', '.join(missing)}")
    camera, photo_share = _style(priors, photo_backgrounds)
    img = None
    if photo_share > 0 and rng.random() < photo_share:  # no draw otherwise: uniform keeps its old stream
        img = photo_background(rng, h, w)
    if img is None:
        img = _background(rng, h, w)
    painter = _Painter(img, attrs, _layout(attrs, rng, h, w), rng)
    painter.draw()
    box = painter.torso_box()
    if camera and rng.random() < _OCCLUSION_SHARE:
        img = _occlude(img, rng, box)
    if degrade:
        img = _degrade_camera(img, rng) if camera else _degrade(img, rng)
    return img, box


def render_person(
    attrs: dict[str, str], rng: np.random.Generator, size: tuple[int, int] = (256, 128), degrade: bool = True,
    priors: str = "uniform", photo_backgrounds: float | None = None,
) -> Image.Image:
    """Draw an RGB person crop of ``size`` = (height, width) showing ``attrs``; ``degrade`` adds blur/noise/low-res.

    ``priors="street"`` also turns on the street recipe's camera (JPEG, motion blur, colour casts,
    occlusion at an edge) and photographic backgrounds for ``photo_backgrounds`` of the crops (0.5 by
    default); ``"uniform"`` is the original renderer, pixel for pixel.
    """
    return _render(attrs, rng, size, degrade, priors, photo_backgrounds)[0]


def synth_example(
    seed: int, index: int, size: tuple[int, int] = (256, 128), degrade: bool = True, priors: str = "uniform",
    photo_backgrounds: float | None = None,
) -> tuple[Image.Image, dict[str, str], str]:
    """Example ``index`` of the dataset with ``seed``: identical regardless of order, count or process.

    With ``priors="street"`` (see :func:`render_person`) it also depends on which photographs are installed.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    # Independent streams, so changing the renderer does not change attributes or captions.
    attr_ss, image_ss, text_ss = np.random.SeedSequence(seed * 1_000_003 + index).spawn(3)
    attrs = sample_attributes(np.random.default_rng(attr_ss), priors)
    img = render_person(attrs, np.random.default_rng(image_ss), size, degrade, priors, photo_backgrounds)
    return img, attrs, caption(attrs, np.random.default_rng(text_ss))


# --------------------------------------------------------------------------- dataset writing


@dataclass(frozen=True)
class SynthConfig:
    """What :func:`write_dataset` generates.

    ``priors``: ``"street"`` (attribute frequencies of pedestrian footage, photographic backgrounds and
    camera effects) or ``"uniform"`` (the original recipe, image for image); ``photo_backgrounds``: the
    share of crops on a photograph (None: 0.5 for street, 0 for uniform).
    """

    n: int = 2000
    seed: int = 0
    size: tuple[int, int] = (256, 128)
    val_fraction: float = 0.1
    priors: str = "uniform"  # "street" lifted real photographs but lowered held-out synthetic accuracy (docs/real-photos.md)
    photo_backgrounds: float | None = None

    def validate(self) -> None:
        """Raise ValueError with a clear message on bad values."""
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        _check_size(self.size)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        _style(self.priors, self.photo_backgrounds)


def _write_one(job: tuple[Path, int, int, tuple[int, int], str, float | None]) -> dict[str, Any]:
    root, seed, index, size, priors, photo_backgrounds = job
    img, attrs, text = synth_example(seed, index, size, True, priors, photo_backgrounds)
    rel = f"images/{index:06d}.png"
    img.save(root / rel, format="PNG")
    return {"image": rel, "answer": text, "attributes": attrs, "id": index}


def _val_ids(config: SynthConfig) -> set[int]:
    if config.val_fraction <= 0 or config.n < 2:
        return set()
    n_val = min(config.n - 1, max(1, round(config.n * config.val_fraction)))
    perm = np.random.default_rng(config.seed).permutation(config.n)
    return {int(i) for i in perm[:n_val]}


def write_dataset(
    out_dir: str | os.PathLike, config: SynthConfig, workers: int = 0, progress: bool = True
) -> dict[str, Path]:
    """Write ``config.n`` PNGs and JSONL split files into ``out_dir`` atomically; returns split name -> JSONL path."""
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not empty (use --force to replace it)")
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        if _style(config.priors, config.photo_backgrounds)[1] > 0:
            photos()  # loaded (or warned about) once here; forked workers inherit them
        jobs = [(tmp, config.seed, i, tuple(config.size), config.priors, config.photo_backgrounds)
                for i in range(config.n)]
        bar = tqdm(total=config.n, desc="synth", unit="img", disable=not progress)
        if workers > 1:
            with multiprocessing.Pool(workers) as pool:
                records = []
                for rec in pool.imap(_write_one, jobs, chunksize=max(1, min(64, config.n // (workers * 4)))):
                    records.append(rec)
                    bar.update()
        else:
            records = []
            for job in jobs:
                records.append(_write_one(job))
                bar.update()
        bar.close()
        if config.val_fraction > 0:
            val = _val_ids(config)
            splits = {
                "train": [r for r in records if r["id"] not in val],
                "val": [r for r in records if r["id"] in val],
            }
            if not splits["val"]:
                log.warning("n=%d is too small for a validation split; val.jsonl is empty", config.n)
        else:
            splits = {"data": records}
        for name, rows in splits.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    log.info("wrote %d images to %s", config.n, out_dir)
    return {name: out_dir / f"{name}.jsonl" for name in splits}
