"""Names and label spaces of the built-in model's synthetic scenes (``tools/make_synthetic_sa1b.py``).

Every mask of a synthetic scene has a plain-English name (its annotation's ``synthetic.name``), and
that string is the class name in every layout ``tools/make_builtin_data.py`` writes:

* **stuff** (:data:`STUFF_CLASSES`): sky, ground, water, wall, floor;
* **objects** (:data:`OBJECT_CLASSES`): house, face, flower, car, target, tree, robot, bug, ball;
* **parts** and **sub-parts** of each object (:data:`OBJECT_PARTS`: object -> (parts, sub-parts), in
  the generator's tiers), e.g. a house's wall, chimney, roof and the wall's door, knob, window, pane;
  the same word may name parts of several objects (a face's, a robot's and a bug's ``eye``);
* a **group** (2-4 alike objects in a row) is not a class: it carries its members' object name
  (``house``). Its members are objects of their own; where the generator dropped a member's mask
  (it covered more than 95% of the group, or was too small), the group's remaining pixels stand for
  that member (:mod:`tools.make_builtin_data`).

Label spaces (:mod:`semantic_sam.data.label_spaces`):

* :func:`builtin_panoptic_label_space`: object-level, COCO panoptic's scheme (family
  ``builtin_panoptic``): the objects as things (class ids 0-8), then the stuff (9-13); object id =
  class id, no parts. The panoptic JSON's category id of class ``i`` is ``i + 1``
  (:func:`builtin_panoptic_categories`).
* :func:`builtin_part_label_space`: Pascal-Part's scheme (family ``builtin_parts``): one
  ``object:part`` class per part and sub-part of :data:`OBJECT_PARTS` (objects in
  :data:`OBJECT_CLASSES` order, parts before sub-parts); objects and parts index their sorted sets.
  The ball has no parts, so it is not an object of this space. The part JSON's category id of class
  ``i`` is ``i + 1`` (:func:`builtin_part_categories`).
"""
from __future__ import annotations

from types import MappingProxyType

from semantic_sam.data.label_spaces import NO_PART, LabelSpace, object_part_label_space

__all__ = [
    "OBJECT_CLASSES",
    "OBJECT_PARTS",
    "PANOPTIC_FAMILY",
    "PART_FAMILY",
    "STUFF_CLASSES",
    "builtin_panoptic_categories",
    "builtin_panoptic_label_space",
    "builtin_part_categories",
    "builtin_part_class_names",
    "builtin_part_label_space",
]

PANOPTIC_FAMILY = "builtin_panoptic"
PART_FAMILY = "builtin_parts"

STUFF_CLASSES: tuple[str, ...] = ("sky", "ground", "water", "wall", "floor")
"""The stuff regions of the scenes' backgrounds (outdoors: sky, ground, water; indoors: wall, floor)."""

OBJECT_PARTS: MappingProxyType[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {
        "house": (("wall", "chimney", "roof"), ("door", "knob", "window", "pane")),
        "face": (("shoulders", "head", "hat"), ("eye", "pupil", "nose", "mouth", "brim", "band")),
        "flower": (("stem", "leaf", "bloom"), ("petal", "centre", "seed")),
        "car": (("body", "wheel"), ("window", "headlight", "door", "hub")),
        "target": (("stand", "board"), ("ring",)),
        "tree": (("trunk", "foliage"), ("fruit",)),
        "robot": (("leg", "arm", "torso", "head"), ("panel", "button", "eye", "antenna")),
        "bug": (("body", "eye"), ("spot", "pupil")),
        "ball": ((), ()),
    }
)
"""Each object's (parts, sub-parts) as the generator's tiers ``part`` and ``subpart`` name them."""

OBJECT_CLASSES: tuple[str, ...] = tuple(OBJECT_PARTS)


def builtin_panoptic_categories() -> list[dict]:
    """The COCO-panoptic ``categories`` of the object layout: ids 1-9 the objects (``isthing`` 1), 10-14
    the stuff (``isthing`` 0); the supercategory is ``object`` or ``stuff``."""
    names = [(n, 1) for n in OBJECT_CLASSES] + [(n, 0) for n in STUFF_CLASSES]
    return [
        {"id": k + 1, "name": n, "supercategory": "object" if thing else "stuff", "isthing": thing}
        for k, (n, thing) in enumerate(names)
    ]


def builtin_panoptic_label_space() -> LabelSpace:
    """Things then stuff (see the module docstring); object id = class id, every part id ``NO_PART``."""
    names = OBJECT_CLASSES + STUFF_CLASSES
    return LabelSpace(PANOPTIC_FAMILY, names, names, (), tuple(range(len(names))), (NO_PART,) * len(names))


def builtin_part_class_names() -> tuple[str, ...]:
    """The ``object:part`` classes in id order: objects in :data:`OBJECT_CLASSES` order, each with its
    parts, then its sub-parts."""
    return tuple(f"{obj}:{p}" for obj, (parts, subparts) in OBJECT_PARTS.items() for p in parts + subparts)


def builtin_part_categories() -> list[dict]:
    """The part JSON's ``categories``: ``{"id": class id + 1, "name": "object:part", "supercategory": object}``."""
    return [
        {"id": k + 1, "name": n, "supercategory": n.split(":")[0]} for k, n in enumerate(builtin_part_class_names())
    ]


def builtin_part_label_space() -> LabelSpace:
    """The ``object:part`` label space of every split (see the module docstring)."""
    return object_part_label_space(PART_FAMILY, builtin_part_class_names())
