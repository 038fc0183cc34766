"""Write synthetic SA-1B-style images with nested (group / object / part / sub-part) masks.

    python tools/make_synthetic_sa1b.py --output DIR --num-images N --seed S [--size 320]

writes ``DIR/sa_<id>.jpg`` and ``DIR/sa_<id>.json`` in the SA-1B download layout, the JSON in
SA-1B's schema. Each scene has textured "stuff" regions (sky, ground, water, wall, floor) and objects
built from parts that have their own sub-parts (a house: wall > window > pane, door > knob,
roof, chimney; a face: head > eye > pupil, nose, mouth, hat > brim, band, shoulders; a flower:
bloom > petals, centre > seeds; a car, a tree, a robot, a target of nested rings, a spotted bug, a
striped ball), sometimes in groups of 2-4 alike objects, at varied scales, colours and occlusions.
Textures (stripes, checkers, gradients, noise) vary inside a region without making new masks, so a
model must learn part boundaries rather than colour edges.

Colours: ``random`` (the default; any colour, contrasting with the enclosing region) or ``typical``:
most regions take a colour of their class's everyday palette (:data:`PALETTES`: blue or grey sky, green
foliage, brown trunks, skin-toned heads, dark wheels, red or white target rings, ...; 15 % of the regions
still take a random colour), so that colour says something about what a region is, as in photographs.

Every pixel belongs to exactly one painted region; a mask is the union of its region and all
its descendants', so masks nest like a tree and a click lies in 1-6 masks (stuff, group,
object, part, sub-part, ...). Besides the SA-1B keys, each annotation carries
``"synthetic": {"name", "level", "parent"}`` (``name`` = a plain-English name, the class names of
:mod:`datasets.builtin_labels`; a group is named after its members, e.g. ``"house"``; ``level`` = the
region's tier of the scene hierarchy, one of :data:`TIERS`, not a user level; ``parent`` = annotation
id of the enclosing mask or ``null``), which SA-1B readers ignore.

Output is a deterministic function of ``--seed`` and the image index (image ``i`` does not
depend on ``--num-images``). Importable: :func:`make_synthetic_sa1b`, :func:`render_scene`.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

__all__ = ["COLOURS", "PALETTES", "check_colours", "make_synthetic_sa1b", "render_scene", "write_synthetic_image", "main"]

ASPECT_RATIOS = (1.5, 4 / 3, 1.0, 0.75)  # width / height
COLOURS = ("random", "typical")  # colour schemes of render_scene

# Everyday colours as HSV boxes (h0, h1, s0, s1, v0, v1), hue in turns (may wrap below 0).
_RED = (-0.03, 0.02, 0.65, 1.0, 0.55, 0.95)
_DARK_RED = (-0.03, 0.03, 0.6, 0.9, 0.3, 0.55)
_ORANGE = (0.05, 0.1, 0.7, 1.0, 0.75, 1.0)
_YELLOW = (0.12, 0.17, 0.6, 1.0, 0.8, 1.0)
_GREEN = (0.22, 0.4, 0.45, 0.9, 0.3, 0.75)
_LIGHT_GREEN = (0.2, 0.33, 0.35, 0.7, 0.6, 0.9)
_SKY_BLUE = (0.53, 0.62, 0.3, 0.75, 0.7, 1.0)
_BLUE = (0.58, 0.67, 0.55, 0.95, 0.4, 0.85)
_TEAL = (0.45, 0.55, 0.4, 0.8, 0.35, 0.75)
_PURPLE = (0.75, 0.85, 0.4, 0.8, 0.45, 0.9)
_PINK = (0.9, 0.97, 0.3, 0.7, 0.75, 1.0)
_BROWN = (0.04, 0.1, 0.45, 0.8, 0.25, 0.55)
_TAN = (0.07, 0.13, 0.25, 0.5, 0.6, 0.9)
_SKIN = (0.03, 0.09, 0.25, 0.6, 0.45, 0.97)
_WHITE = (0.0, 1.0, 0.0, 0.08, 0.88, 1.0)
_LIGHT_GREY = (0.0, 1.0, 0.0, 0.1, 0.65, 0.88)
_GREY = (0.0, 1.0, 0.0, 0.12, 0.35, 0.65)
_BLACK = (0.0, 1.0, 0.0, 0.3, 0.05, 0.22)
_STEEL = (0.55, 0.65, 0.08, 0.25, 0.45, 0.9)
_CREAM = (0.1, 0.16, 0.1, 0.3, 0.8, 1.0)
_SUNSET = (0.02, 0.09, 0.35, 0.7, 0.85, 1.0)
_SAND = (0.1, 0.14, 0.3, 0.55, 0.7, 0.95)
_VIVID = (0.0, 1.0, 0.6, 1.0, 0.6, 1.0)
_ANY = (0.0, 1.0, 0.25, 1.0, 0.25, 1.0)

# The palette of each region class: a stuff name, an object drawn as one region, or "object:part".
PALETTES: dict[str, tuple[tuple[float, ...], ...]] = {
    "sky": (_SKY_BLUE, _SKY_BLUE, _LIGHT_GREY, _SUNSET),
    "ground": (_GREEN, _LIGHT_GREEN, _BROWN, _SAND),
    "water": (_BLUE, _TEAL),
    "wall": (_CREAM, _LIGHT_GREY, _TAN, _PINK),
    "floor": (_BROWN, _GREY, _DARK_RED),
    "ball": (_ANY,),
    "house:wall": (_CREAM, _WHITE, _LIGHT_GREY, _TAN, _DARK_RED),
    "house:chimney": (_DARK_RED, _GREY, _BROWN),
    "house:roof": (_RED, _DARK_RED, _BROWN, _GREY),
    "house:door": (_BROWN, _DARK_RED, _GREEN, _BLUE),
    "house:knob": (_YELLOW, _LIGHT_GREY),
    "house:window": (_WHITE, _BROWN, _BLACK),
    "house:pane": (_SKY_BLUE, _TEAL),
    "face:shoulders": (_ANY,),
    "face:head": (_SKIN,),
    "face:eye": (_WHITE,),
    "face:pupil": (_BLACK, _BROWN, _BLUE),
    "face:nose": (_BROWN, _DARK_RED),
    "face:mouth": (_RED, _DARK_RED, _PINK),
    "face:hat": (_ANY,),
    "face:brim": (_ANY,),
    "face:band": (_ANY,),
    "flower:stem": (_GREEN,),
    "flower:leaf": (_GREEN, _LIGHT_GREEN),
    "flower:petal": (_RED, _PINK, _PURPLE, _YELLOW, _WHITE, _ORANGE),
    "flower:centre": (_YELLOW, _ORANGE, _BROWN),
    "flower:seed": (_BLACK, _BROWN),
    "car:body": (_VIVID, _GREY, _WHITE, _BLACK),
    "car:window": (_SKY_BLUE, _LIGHT_GREY),
    "car:headlight": (_YELLOW, _WHITE),
    "car:door": (_VIVID, _GREY, _WHITE),
    "car:wheel": (_BLACK,),
    "car:hub": (_LIGHT_GREY, _GREY),
    "target:stand": (_BROWN, _TAN),
    "target:board": (_WHITE, _YELLOW),
    "target:ring": (_RED, _WHITE, _BLACK, _BLUE, _YELLOW),
    "tree:trunk": (_BROWN,),
    "tree:foliage": (_GREEN, _LIGHT_GREEN),
    "tree:fruit": (_RED, _ORANGE, _YELLOW),
    "robot:leg": (_STEEL, _GREY, _LIGHT_GREY),
    "robot:arm": (_STEEL, _GREY, _LIGHT_GREY),
    "robot:torso": (_STEEL, _GREY, _LIGHT_GREY),
    "robot:head": (_STEEL, _GREY, _LIGHT_GREY),
    "robot:panel": (_BLACK, _BLUE),
    "robot:button": (_RED, _YELLOW, _GREEN),
    "robot:eye": (_TEAL, _RED, _YELLOW),
    "robot:antenna": (_RED, _GREY),
    "bug:body": (_RED, _RED, _ORANGE, _YELLOW, _GREEN),
    "bug:spot": (_BLACK,),
    "bug:eye": (_WHITE,),
    "bug:pupil": (_BLACK,),
}
ATYPICAL = 0.15  # share of the regions that take a random colour under the typical scheme


def check_colours(colours: str) -> None:
    """Raise ValueError unless ``colours`` is one of :data:`COLOURS`."""
    if colours not in COLOURS:
        raise ValueError(f"colours: unknown scheme {colours!r}; expected one of {COLOURS}")
TIERS = ("stuff", "group", "object", "part", "subpart")  # the scene hierarchy, coarse to fine


@dataclass
class _Node:
    name: str
    tier: str
    parent: int | None
    color: np.ndarray | None = None
    children: list[int] = field(default_factory=list)


class _Scene:
    """A canvas plus an owner map: ``owner[y, x]`` = id of the node that painted the pixel last."""

    def __init__(self, height: int, width: int, rng: np.random.Generator, colours: str = "random"):
        self.h, self.w = height, width
        self.rng = rng
        self.typical = colours == "typical"
        self.canvas = np.zeros((height, width, 3), np.float32)
        self.owner = np.full((height, width), -1, np.int32)
        self.nodes: list[_Node] = []

    # -- nodes -----------------------------------------------------------------------------
    def node(self, name: str, tier: str, parent: int | None = None) -> int:
        """A node that paints nothing itself (its mask is the union of its descendants)."""
        self.nodes.append(_Node(name, tier, parent))
        nid = len(self.nodes) - 1
        if parent is not None:
            self.nodes[parent].children.append(nid)
        return nid

    def paint(self, nid: int, mask: np.ndarray, color: np.ndarray | None = None) -> int:
        """Paint ``mask`` with a texture for node ``nid`` (colour contrasting with its parent)."""
        node = self.nodes[nid]
        if color is None:
            color = node.color if node.color is not None else self._contrasting_color(node.parent, self.palette_key(nid))
        node.color = color
        _fill(self.canvas, mask, color, self.rng)
        self.owner[mask] = nid
        return nid

    def region(self, name: str, tier: str, parent: int | None, mask: np.ndarray, color=None) -> int:
        return self.paint(self.node(name, tier, parent), mask, color)

    def palette_key(self, nid: int) -> str:
        """The :data:`PALETTES` key of node ``nid``: its name, prefixed by its object's for a part."""
        node = self.nodes[nid]
        if node.tier in ("stuff", "object", "group"):
            return node.name
        k = node.parent
        while k is not None and self.nodes[k].tier != "object":
            k = self.nodes[k].parent
        return node.name if k is None else f"{self.nodes[k].name}:{node.name}"

    def pick_color(self, key: str) -> np.ndarray:
        """A colour for a region of class ``key``: of its palette under the typical scheme, else random."""
        if not self.typical or self.rng.random() < ATYPICAL:
            return _random_color(self.rng)
        boxes = PALETTES[key]
        h0, h1, s0, s1, v0, v1 = boxes[int(self.rng.integers(len(boxes)))]
        h, s, v = self.rng.uniform(h0, h1) % 1.0, self.rng.uniform(s0, s1), self.rng.uniform(v0, v1)
        return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255.0

    def _contrasting_color(self, parent: int | None, key: str) -> np.ndarray:
        ref = None
        while parent is not None and ref is None:
            ref = self.nodes[parent].color
            parent = self.nodes[parent].parent
        for tries in range(20):
            # under the typical scheme, a random colour after 10 palette colours too close to the parent's
            c = self.pick_color(key) if tries < 10 else _random_color(self.rng)
            if ref is None or np.linalg.norm(c - ref) > 110:
                return c
        return 255.0 - ref

    # -- shapes: polygons in pixel coordinates -> bool masks ---------------------------------
    def polys_mask(self, polys: Sequence[np.ndarray]) -> np.ndarray:
        m = np.zeros((self.h, self.w), np.uint8)
        cv2.fillPoly(m, [np.round(p * 4).astype(np.int32) for p in polys], 1, lineType=cv2.LINE_8, shift=2)
        return m.astype(bool)

    def subtree_mask(self, nid: int) -> np.ndarray:
        ids = []
        stack = [nid]
        while stack:
            k = stack.pop()
            ids.append(k)
            stack.extend(self.nodes[k].children)
        return np.isin(self.owner, ids)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.25, 1.0), rng.uniform(0.25, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255.0


def _jitter(color: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A visibly different shade of ``color`` (for alike neighbours such as petals)."""
    return np.clip(color + rng.choice([-1.0, 1.0]) * rng.uniform(30, 60, 3), 0, 255).astype(np.float32)


def _fill(canvas: np.ndarray, mask: np.ndarray, color: np.ndarray, rng: np.random.Generator) -> None:
    """Fill ``mask`` with ``color``: solid, gradient, stripes, checker or noise (a region's texture)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return
    style = rng.choice(["solid", "gradient", "stripes", "checker", "noise"], p=[0.4, 0.2, 0.2, 0.1, 0.1])
    shade = np.clip(color * rng.uniform(0.55, 0.85) + rng.uniform(-20, 20, 3), 0, 255)
    theta = rng.uniform(0, math.pi)
    proj = xs * math.cos(theta) + ys * math.sin(theta)
    if style == "solid":
        vals = np.broadcast_to(color, (ys.size, 3))
    elif style == "gradient":
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        vals = color[None] * (1 - t[:, None]) + shade[None] * t[:, None]
    elif style == "stripes":
        period = rng.uniform(3, 10)
        t = (np.floor(proj / period) % 2)[:, None]
        vals = color[None] * (1 - t) + shade[None] * t
    elif style == "checker":
        p = int(rng.integers(3, 9))
        t = (((xs // p) + (ys // p)) % 2)[:, None]
        vals = color[None] * (1 - t) + shade[None] * t
    else:
        vals = color[None] + rng.normal(0, 14, (ys.size, 3))
    canvas[ys, xs] = vals


# -- local-frame geometry ---------------------------------------------------------------------
class _Frame:
    """Maps object-local coordinates (about [-1, 1]²) to pixels: centre, scale, rotation."""

    def __init__(self, cx: float, cy: float, s: float, angle: float):
        self.cx, self.cy, self.s = cx, cy, s
        self.c, self.sn = math.cos(angle), math.sin(angle)

    def pts(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, np.float64)
        x = self.cx + self.s * (uv[:, 0] * self.c - uv[:, 1] * self.sn)
        y = self.cy + self.s * (uv[:, 0] * self.sn + uv[:, 1] * self.c)
        return np.stack([x, y], 1)

    def rect(self, u0, v0, u1, v1) -> np.ndarray:
        return self.pts([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])

    def ellipse(self, uc, vc, ru, rv, rot=0.0, n=40) -> np.ndarray:
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        u, v = ru * np.cos(t), rv * np.sin(t)
        c, s = math.cos(rot), math.sin(rot)
        return self.pts(np.stack([uc + u * c - v * s, vc + u * s + v * c], 1))

    def roundrect(self, u0, v0, u1, v1, power=4.0, n=48) -> np.ndarray:
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        cu, cv, a, b = (u0 + u1) / 2, (v0 + v1) / 2, (u1 - u0) / 2, (v1 - v0) / 2
        ct, st = np.cos(t), np.sin(t)
        u = cu + a * np.sign(ct) * np.abs(ct) ** (2 / power)
        v = cv + b * np.sign(st) * np.abs(st) ** (2 / power)
        return self.pts(np.stack([u, v], 1))

    def blob(self, uc, vc, r, rng: np.random.Generator, wobble=0.25, n=48) -> np.ndarray:
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        rad = np.ones_like(t)
        for k in range(2, 5):
            rad += rng.uniform(0, wobble / k) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
        rad *= r / rad.max()
        return self.pts(np.stack([uc + rad * np.cos(t), vc + rad * np.sin(t)], 1))


# -- object templates: each builds one object node under ``parent`` ---------------------------
def _house(sc: _Scene, f: _Frame, parent: int | None) -> int:
    rng = sc.rng
    obj = sc.node("house", "object", parent)
    wall = sc.region("wall", "part", obj, sc.polys_mask([f.rect(-0.7, -0.15, 0.7, 0.95)]))
    if rng.random() < 0.5:
        sc.region("chimney", "part", obj, sc.polys_mask([f.rect(0.3, -0.8, 0.5, -0.3)]))
    sc.region("roof", "part", obj, sc.polys_mask([f.pts([[-0.9, -0.1], [0.9, -0.1], [0.0, -0.85]])]))
    door = sc.region("door", "subpart", wall, sc.polys_mask([f.rect(-0.16, 0.45, 0.16, 0.95)]))
    sc.region("knob", "subpart", door, sc.polys_mask([f.ellipse(0.08, 0.72, 0.04, 0.04)]))
    glass = None
    for x in (-0.45, 0.45):
        win = sc.region("window", "subpart", wall, sc.polys_mask([f.rect(x - 0.18, 0.03, x + 0.18, 0.37)]))
        for du in (-1, 1):
            for dv in (-1, 1):
                u0, v0 = x + (0.02 if du > 0 else -0.15), 0.2 + (0.02 if dv > 0 else -0.14)
                pane = sc.node("pane", "subpart", win)
                sc.paint(pane, sc.polys_mask([f.rect(u0, v0, u0 + 0.13, v0 + 0.12)]), glass)
                glass = sc.nodes[pane].color
    return obj


def _face(sc: _Scene, f: _Frame, parent: int | None) -> int:
    rng = sc.rng
    obj = sc.node("face", "object", parent)
    shoulders = sc.polys_mask([f.pts([[-0.45, 0.65], [0.45, 0.65], [0.75, 1.3], [-0.75, 1.3]])])
    sc.region("shoulders", "part", obj, shoulders)
    head = sc.region("head", "part", obj, sc.polys_mask([f.ellipse(0, 0.05, 0.55, 0.65)]))
    dx = rng.uniform(-0.05, 0.05)
    for x in (-0.22, 0.22):
        eye = sc.region("eye", "subpart", head, sc.polys_mask([f.ellipse(x, -0.1, 0.14, 0.1)]))
        sc.region("pupil", "subpart", eye, sc.polys_mask([f.ellipse(x + dx, -0.1, 0.06, 0.06)]))
    sc.region("nose", "subpart", head, sc.polys_mask([f.pts([[0, 0.0], [-0.08, 0.22], [0.08, 0.22]])]))
    sc.region("mouth", "subpart", head, sc.polys_mask([f.ellipse(0, 0.42, 0.24, 0.08)]))
    if rng.random() < 0.6:
        hat = sc.region(
            "hat", "part", obj, sc.polys_mask([f.pts([[-0.4, -0.5], [0.4, -0.5], [0.3, -1.05], [-0.3, -1.05]])])
        )
        sc.region("brim", "subpart", hat, sc.polys_mask([f.rect(-0.7, -0.62, 0.7, -0.48)]))
        sc.region("band", "subpart", hat, sc.polys_mask([f.rect(-0.36, -0.78, 0.36, -0.64)]))
    return obj


def _flower(sc: _Scene, f: _Frame, parent: int | None) -> int:
    rng = sc.rng
    obj = sc.node("flower", "object", parent)
    sc.region("stem", "part", obj, sc.polys_mask([f.rect(-0.05, 0.0, 0.05, 1.0)]))
    sc.region("leaf", "part", obj, sc.polys_mask([f.ellipse(0.22, 0.6, 0.24, 0.09, rot=-0.5)]))
    bloom = sc.node("bloom", "part", obj)
    n = int(rng.integers(5, 9))
    petal_color = sc.pick_color("flower:petal")
    for k in range(n):
        a = 2 * math.pi * k / n
        sc.region(
            "petal",
            "subpart",
            bloom,
            sc.polys_mask([f.ellipse(0.38 * math.cos(a), -0.3 + 0.38 * math.sin(a), 0.3, 0.13, rot=a)]),
            _jitter(petal_color, rng),  # overlapping petals stay distinguishable
        )
    centre = sc.region("centre", "subpart", bloom, sc.polys_mask([f.ellipse(0, -0.3, 0.2, 0.2)]))
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(3, 6))):
            r, a = rng.uniform(0, 0.11), rng.uniform(0, 2 * math.pi)
            sc.region(
                "seed",
                "subpart",
                centre,
                sc.polys_mask([f.ellipse(r * math.cos(a), -0.3 + r * math.sin(a), 0.04, 0.04)]),
            )
    return obj


def _car(sc: _Scene, f: _Frame, parent: int | None) -> int:
    obj = sc.node("car", "object", parent)
    body = sc.region(
        "body",
        "part",
        obj,
        sc.polys_mask(
            [f.roundrect(-1.0, -0.05, 1.0, 0.55), f.pts([[-0.55, 0.0], [0.5, 0.0], [0.3, -0.45], [-0.4, -0.45]])]
        ),
    )
    for u0, u1 in ((-0.45, -0.08), (0.0, 0.38)):
        sc.region(
            "window",
            "subpart",
            body,
            sc.polys_mask([f.pts([[u0, -0.05], [u1, -0.05], [u1 - 0.06, -0.38], [u0 + 0.04, -0.38]])]),
        )
    sc.region("headlight", "subpart", body, sc.polys_mask([f.ellipse(0.9, 0.15, 0.07, 0.06)]))
    sc.region("door", "subpart", body, sc.polys_mask([f.rect(-0.35, 0.05, 0.25, 0.45)]))
    for x in (-0.58, 0.58):
        wheel = sc.region("wheel", "part", obj, sc.polys_mask([f.ellipse(x, 0.55, 0.24, 0.24)]))
        sc.region("hub", "subpart", wheel, sc.polys_mask([f.ellipse(x, 0.55, 0.11, 0.11)]))
    return obj


def _target(sc: _Scene, f: _Frame, parent: int | None) -> int:
    rng = sc.rng
    obj = sc.node("target", "object", parent)
    if rng.random() < 0.5:
        sc.region(
            "stand",
            "part",
            obj,
            sc.polys_mask(
                [f.pts([[-0.1, 0.5], [0.1, 0.5], [0.5, 1.2], [0.35, 1.2], [0, 0.75], [-0.35, 1.2], [-0.5, 1.2]])]
            ),
        )
    node = None
    n = int(rng.integers(3, 5))
    for k in range(n):
        r = 0.85 * (1 - k / n)
        node = sc.region(
            "ring" if k else "board",
            "part" if k == 0 else "subpart",
            obj if k == 0 else node,
            sc.polys_mask([f.ellipse(0, 0, r, r)]),
        )
    return obj


def _tree(sc: _Scene, f: _Frame, parent: int | None) -> int:
    rng = sc.rng
    obj = sc.node("tree", "object", parent)
    sc.region("trunk", "part", obj, sc.polys_mask([f.rect(-0.11, 0.1, 0.11, 1.0)]))
    foliage = sc.region("foliage", "part", obj, sc.polys_mask([f.blob(0, -0.25, 0.75, rng)]))
    fruit_color = sc.pick_color("tree:fruit")
    for _ in range(int(rng.integers(2, 7))):
        r, a = rng.uniform(0, 0.42), rng.uniform(0, 2 * math.pi)
        sc.region(
            "fruit",
            "subpart",
            foliage,
            sc.polys_mask([f.ellipse(r * math.cos(a), -0.25 + r * math.sin(a), 0.08, 0.08)]),
            fruit_color,
        )
    return obj


def _robot(sc: _Scene, f: _Frame, parent: int | None) -> int:
    rng = sc.rng
    obj = sc.node("robot", "object", parent)
    for x in (-0.22, 0.22):
        sc.region("leg", "part", obj, sc.polys_mask([f.rect(x - 0.1, 0.5, x + 0.1, 1.0)]))
    for x in (-0.62, 0.62):
        sc.region("arm", "part", obj, sc.polys_mask([f.rect(x - 0.09, -0.2, x + 0.09, 0.45)]))
    torso = sc.region("torso", "part", obj, sc.polys_mask([f.rect(-0.5, -0.3, 0.5, 0.55)]))
    panel = sc.region("panel", "subpart", torso, sc.polys_mask([f.rect(-0.3, -0.12, 0.3, 0.38)]))
    for k in range(int(rng.integers(2, 4))):
        sc.region("button", "subpart", panel, sc.polys_mask([f.ellipse(-0.16 + 0.16 * k, 0.12, 0.06, 0.06)]))
    head = sc.region("head", "part", obj, sc.polys_mask([f.rect(-0.3, -0.85, 0.3, -0.35)]))
    for x in (-0.14, 0.14):
        sc.region("eye", "subpart", head, sc.polys_mask([f.rect(x - 0.07, -0.7, x + 0.07, -0.56)]))
    sc.region(
        "antenna", "subpart", head, sc.polys_mask([f.rect(-0.03, -1.05, 0.03, -0.85), f.ellipse(0, -1.07, 0.06, 0.06)])
    )
    return obj


def _bug(sc: _Scene, f: _Frame, parent: int | None) -> int:
    rng = sc.rng
    obj = sc.node("bug", "object", parent)
    body = sc.region("body", "part", obj, sc.polys_mask([f.blob(0, 0.1, 0.8, rng, wobble=0.35)]))
    spot_color = None
    for _ in range(int(rng.integers(2, 6))):
        r, a = rng.uniform(0.1, 0.4), rng.uniform(0, 2 * math.pi)
        spot = sc.node("spot", "subpart", body)
        color = None if spot_color is None else _jitter(spot_color, rng)
        sc.paint(spot, sc.polys_mask([f.blob(r * math.cos(a), 0.2 + r * math.sin(a), 0.14, rng)]), color)
        spot_color = sc.nodes[spot].color
    for x in (-0.25, 0.25):
        eye = sc.region("eye", "part", obj, sc.polys_mask([f.ellipse(x, -0.55, 0.16, 0.16)]))
        sc.region("pupil", "subpart", eye, sc.polys_mask([f.ellipse(x, -0.52, 0.07, 0.07)]))
    return obj


def _ball(sc: _Scene, f: _Frame, parent: int | None) -> int:
    """A single region with a busy texture: no parts, so texture edges are not mask edges."""
    obj = sc.node("ball", "object", parent)
    sc.paint(obj, sc.polys_mask([f.ellipse(0, 0, 0.8, 0.8)]))
    return obj


TEMPLATES: dict[str, Callable[[_Scene, _Frame, int | None], int]] = {
    "house": _house,
    "face": _face,
    "flower": _flower,
    "car": _car,
    "target": _target,
    "tree": _tree,
    "robot": _robot,
    "bug": _bug,
    "ball": _ball,
}


def _background(sc: _Scene) -> None:
    rng, h, w = sc.rng, sc.h, sc.w
    xs = np.linspace(0, w, 33)
    if rng.random() < 0.75:
        y0 = h * rng.uniform(0.3, 0.65)
        ys = y0 + h * rng.uniform(0.01, 0.08) * np.sin(
            2 * math.pi * xs / (w * rng.uniform(0.4, 1.5)) + rng.uniform(0, 6.3)
        )
        top = np.concatenate([[[0, 0], [w, 0]], np.stack([xs, ys], 1)[::-1]])
        sc.region("sky", "stuff", None, np.ones((h, w), bool))
        sc.region("ground", "stuff", None, ~sc.polys_mask([top]))
        if rng.random() < 0.4:
            f = _Frame(w * rng.uniform(0.2, 0.8), min(h - 1, y0 + (h - y0) * 0.5), (h - y0) * rng.uniform(0.3, 0.6), 0)
            sc.region("water", "stuff", None, sc.polys_mask([f.blob(0, 0, 1.0, rng, wobble=0.3)]))
    else:
        sc.region("wall", "stuff", None, np.ones((h, w), bool))
        if rng.random() < 0.6:
            y0 = h * rng.uniform(0.55, 0.8)
            sc.region("floor", "stuff", None, sc.polys_mask([np.array([[0, y0], [w, y0], [w, h], [0, h]], float)]))


def render_scene(
    rng: np.random.Generator, height: int, width: int, colours: str = "random"
) -> tuple[np.ndarray, list[dict]]:
    """Draw one scene, its regions coloured by the ``colours`` scheme (one of :data:`COLOURS`).

    Returns:
        ``(image, regions)``: image (H, W, 3) uint8 RGB; regions a pre-order list of
        ``{"mask": (H, W) bool, "name", "level" (the tier, under the output format's key), "parent": index
        into regions or None}``
        (masks too small or duplicating their parent are already dropped).
    """
    check_colours(colours)
    sc = _Scene(height, width, rng, colours)
    _background(sc)
    short = min(height, width)
    n_items = int(rng.integers(2, 6))
    names = list(TEMPLATES)
    for _ in range(n_items):
        name = names[int(rng.integers(len(names)))]
        s = short * rng.uniform(0.1, 0.3)
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.15, 0.9) * height
        angle = rng.uniform(-0.3, 0.3)
        if rng.random() < 0.3:  # a group of alike objects in a row
            k = int(rng.integers(2, 5))
            s *= 0.7
            step = s * rng.uniform(1.6, 2.1)
            group = sc.node(name, "group")  # not a class of its own: named after its members
            x0 = cx - step * (k - 1) / 2
            for j in range(k):
                TEMPLATES[name](sc, _Frame(x0 + j * step, cy + rng.uniform(-0.15, 0.15) * s, s, angle), group)
        else:
            TEMPLATES[name](sc, _Frame(cx, cy, s, angle), None)

    noise = rng.normal(0, rng.uniform(1, 5), sc.canvas.shape)
    image = np.clip(sc.canvas + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (3, 3), 0)

    # Final masks: a node owns what it painted last plus everything its descendants own.
    min_area = max(12, int(3e-4 * height * width))
    regions: list[dict] = []

    def visit(nid: int, kept_parent: int | None, parent_area: int | None) -> None:
        node = sc.nodes[nid]
        mask = sc.subtree_mask(nid)
        area = int(mask.sum())
        keep = area >= min_area and not (parent_area is not None and area > 0.95 * parent_area)
        here = kept_parent
        if keep:
            regions.append({"mask": mask, "name": node.name, "level": node.tier, "parent": kept_parent})
            here = len(regions) - 1
        for c in node.children:
            visit(c, here, area if keep else parent_area)

    for nid, node in enumerate(sc.nodes):
        if node.parent is None:
            visit(nid, None, None)
    return image, regions


def _interior_point(mask: np.ndarray) -> list[float]:
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [float(x), float(y)]


def _annotations(regions: Sequence[dict], image_id: int, rng: np.random.Generator) -> list[dict]:
    anns = []
    for k, r in enumerate(regions):
        rle = mask_utils.encode(np.asfortranarray(r["mask"].astype(np.uint8)))
        h, w = r["mask"].shape
        anns.append(
            {
                "id": image_id * 10000 + k,
                "segmentation": {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")},
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "area": int(mask_utils.area(rle)),
                "predicted_iou": round(float(rng.uniform(0.86, 1.0)), 6),
                "stability_score": round(float(rng.uniform(0.92, 1.0)), 6),
                "point_coords": [_interior_point(r["mask"])],
                "crop_box": [0.0, 0.0, float(w), float(h)],
                "synthetic": {
                    "name": r["name"],
                    "level": r["level"],
                    "parent": None if r["parent"] is None else image_id * 10000 + r["parent"],
                },
            }
        )
    return anns


def _image_size(rng: np.random.Generator, long_side: int) -> tuple[int, int]:
    ar = ASPECT_RATIOS[int(rng.integers(len(ASPECT_RATIOS)))]
    if ar >= 1:
        return max(8, round(long_side / ar)), long_side
    return long_side, max(8, round(long_side * ar))


def write_synthetic_image(
    output: str, seed: int, index: int, image_id: int, size: int = 320, jpeg_quality: int = 92,
    colours: str = "random",
) -> tuple[str, str]:
    """Render image ``index`` of the ``seed`` sequence and write ``sa_<image_id>.jpg/.json``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    h, w = _image_size(rng, size)
    image, regions = render_scene(rng, h, w, colours)
    file_name = f"sa_{image_id}.jpg"
    record = {
        "image": {"image_id": image_id, "width": w, "height": h, "file_name": file_name},
        "annotations": _annotations(regions, image_id, rng),
    }
    jpg = os.path.join(output, file_name)
    js = os.path.join(output, f"sa_{image_id}.json")
    Image.fromarray(image).save(jpg, quality=jpeg_quality)
    with open(js, "w", encoding="utf-8") as f:
        json.dump(record, f, separators=(",", ":"))
    return jpg, js


def make_synthetic_sa1b(
    output: str,
    num_images: int,
    seed: int = 0,
    size: int = 320,
    start_id: int = 1,
    jpeg_quality: int = 92,
    progress: bool = False,
    colours: str = "random",
) -> list[tuple[str, str]]:
    """Write ``num_images`` synthetic images as ``sa_<id>.jpg`` + ``sa_<id>.json`` into ``output``.

    Args:
        output: folder (created if missing).
        num_images: how many images.
        seed: image ``i`` is a deterministic function of ``(seed, i)``.
        size: long side in pixels; the aspect ratio (W/H) is one of 3:2, 4:3, 1:1, 3:4.
        start_id: ``image_id`` (and file-name number) of the first image.
        jpeg_quality: JPEG quality of the written images.
        progress: show a tqdm progress bar.
        colours: colour scheme, one of :data:`COLOURS` (see the module docstring).

    Returns:
        The ``(jpg, json)`` paths written, in order.
    """
    if num_images < 0 or size < 16:
        raise ValueError(f"need num_images >= 0 and size >= 16, got {num_images}, {size}")
    check_colours(colours)
    os.makedirs(output, exist_ok=True)
    indices = range(num_images)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synthetic SA-1B", unit="img")
    return [write_synthetic_image(output, seed, i, start_id + i, size, jpeg_quality, colours) for i in indices]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic SA-1B-style images with nested masks.")
    parser.add_argument("--output", required=True, help="folder to write sa_N.jpg + sa_N.json into")
    parser.add_argument("--num-images", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=320, help="long side in pixels (default 320)")
    parser.add_argument("--start-id", type=int, default=1, help="image id of the first image (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--colours", choices=COLOURS, default="random", help="region colours: random (default) or typical of the class"
    )
    args = parser.parse_args(argv)
    try:
        written = make_synthetic_sa1b(
            args.output, args.num_images, args.seed, args.size, args.start_id, progress=not args.no_progress,
            colours=args.colours,
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} images to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
