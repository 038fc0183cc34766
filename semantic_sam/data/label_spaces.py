"""Object and part label spaces of the labelled datasets (SEMANTIC_SPEC §7).

A label space maps a dataset's contiguous class id (what the dataset dicts carry as
``category_id``) to an **object label** and a **part label**, each an index into a vocabulary:

* ``class_names``: the dataset's own names, index = contiguous class id (``car:license plate``,
  ``Car Side Mirror``, ``car_(automobile):antenna``, ``person``);
* ``object_classes`` / ``part_classes``: the object and part vocabularies;
* ``class_to_object`` / ``class_to_part``: class id -> object id / part id (:data:`NO_PART` for
  object-level classes).

Id rules:

* **Part families** (Pascal-Part, PartImageNet, PACO-LVIS): the object and part vocabularies are the
  *sorted* sets of the object and part names of the **whole family**, never of one registered split.
  The reference indexed the sorted sets of the split it registered, so ``car`` was object 4 in
  ``pascal_part_train_base`` and 5 in ``pascal_part_train`` (SEMANTIC_SPEC §7, Pascal Part bug 1);
  here it is 5 in both. Class ids are the family's too: a split's JSON categories are matched to
  the family's classes by name, not by their JSON ids (the base split numbers its 77 classes 1-77).
* **COCO panoptic** (object-level): 133 classes in detectron2's order (``COCO_CATEGORIES`` by id:
  things 0-79, then stuff 80-132; the reference's ``tgt_ids < 80`` thing test depends on it). The
  object id *is* the class id and every part id is :data:`NO_PART`.
* ``object:part`` names are split on the colon (:func:`split_object_part`), never on spaces: the
  reference's ``name.split(" ")`` turned PartImageNet's ``Car Side Mirror`` into ``side``.

Names are kept as the datasets spell them; the text encoder normalises them when it builds prompts
(:func:`semantic_sam.modeling.language.templates.normalize_class_name`).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

__all__ = [
    "NO_PART",
    "PASCAL_PART_BASE_OBJECTS",
    "PASCAL_PART_NOVEL_OBJECTS",
    "WHOLE_PART",
    "LabelSpace",
    "LabelSpaceError",
    "coco_panoptic_dataset_ids",
    "coco_panoptic_label_space",
    "label_space_from_metadata",
    "object_part_label_space",
    "paco_class_name",
    "paco_label_space",
    "partimagenet_class_names",
    "partimagenet_label_space",
    "partimagenet_object_part",
    "pascal_part_class_names",
    "pascal_part_label_space",
    "split_object_part",
]

NO_PART = -1
"""Part label of an instance that has no part label (object-level data such as COCO panoptic)."""

WHOLE_PART = "whole"
"""PACO's part name for an object entry (a category name without ``:``)."""


class LabelSpaceError(ValueError, UserError):
    """A class name that does not fit a label space (e.g. a part name without its object); the
    one-line message names it."""


# ------------------------------------------------------------------------------------------ names
def split_object_part(name: str) -> tuple[str, str]:
    """``"object:part"`` -> ``(object, part)``, split on the one colon; surrounding spaces are
    stripped, inner spaces kept (``"car:license plate"`` -> ``("car", "license plate")``).

    Raises:
        LabelSpaceError: ``name`` is not a string, has no colon (a part name without an object),
            more than one colon, or an empty object or part.
    """
    if not isinstance(name, str):
        raise LabelSpaceError(f"a class name must be a string 'object:part', got {type(name).__name__} ({name!r})")
    if ":" not in name:
        raise LabelSpaceError(f"{name!r} is a part name without an object (expected 'object:part')")
    if name.count(":") > 1:
        raise LabelSpaceError(f"{name!r} has more than one ':' (expected 'object:part')")
    obj, part = (s.strip() for s in name.split(":"))
    if not obj:
        raise LabelSpaceError(f"{name!r} is a part name without an object (expected 'object:part')")
    if not part:
        raise LabelSpaceError(f"{name!r} has an empty part name (expected 'object:part')")
    return obj, part


@dataclass(frozen=True)
class LabelSpace:
    """The object and part labels of one dataset family (see the module docstring).

    Attributes:
        family: ``"coco_panoptic"``, ``"pascal_part"``, ``"partimagenet"`` or ``"paco_lvis"``.
        class_names: the dataset's names; index = contiguous class id.
        object_classes: the object vocabulary.
        part_classes: the part vocabulary (empty for object-level families).
        class_to_object: class id -> object id.
        class_to_part: class id -> part id, or :data:`NO_PART`.
    """

    family: str
    class_names: tuple[str, ...]
    object_classes: tuple[str, ...]
    part_classes: tuple[str, ...]
    class_to_object: tuple[int, ...]
    class_to_part: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.class_names)
        if len(self.class_to_object) != n or len(self.class_to_part) != n:
            raise ValueError(f"{self.family}: class_to_object / class_to_part must have {n} entries")
        if not all(0 <= o < len(self.object_classes) for o in self.class_to_object):
            raise ValueError(f"{self.family}: an object id is out of range")
        if not all(p == NO_PART or 0 <= p < len(self.part_classes) for p in self.class_to_part):
            raise ValueError(f"{self.family}: a part id is out of range")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_id(self, name: str) -> int:
        """The contiguous id of the dataset name ``name``; a :class:`LabelSpaceError` if unknown."""
        index = self._index()
        if name not in index:
            raise LabelSpaceError(f"{name!r} is not a {self.family} class ({self.num_classes} classes)")
        return index[name]

    def has_class(self, name: str) -> bool:
        return name in self._index()

    def _index(self) -> dict[str, int]:
        cache = self.__dict__.get("_name_index")
        if cache is None:
            cache = {}
            for i, n in enumerate(self.class_names):
                cache.setdefault(n, i)
            object.__setattr__(self, "_name_index", cache)
        return cache

    def labels(self, class_id: int) -> tuple[str, str | None]:
        """``(object name, part name or None)`` of a class id."""
        p = self.class_to_part[class_id]
        return self.object_classes[self.class_to_object[class_id]], (None if p == NO_PART else self.part_classes[p])

    def metadata(self) -> dict[str, Any]:
        """The label space as detectron2 metadata (lists, so the values compare and pickle simply); the
        class names go under detectron2's ``thing_classes``."""
        return {
            "label_family": self.family,
            "thing_classes": list(self.class_names),
            "object_classes": list(self.object_classes),
            "part_classes": list(self.part_classes),
            "class_to_object": list(self.class_to_object),
            "class_to_part": list(self.class_to_part),
        }


def label_space_from_metadata(meta: Any) -> LabelSpace:
    """Rebuild a :class:`LabelSpace` from what :meth:`LabelSpace.metadata` put in a dataset's metadata."""
    get = meta.get if isinstance(meta, Mapping) else (lambda k: getattr(meta, k))
    return LabelSpace(
        get("label_family"),
        tuple(get("thing_classes")),
        tuple(get("object_classes")),
        tuple(get("part_classes")),
        tuple(get("class_to_object")),
        tuple(get("class_to_part")),
    )


def object_part_label_space(
    family: str, class_names: Sequence[str], splitter: Callable[[str], tuple[str, str]] = split_object_part
) -> LabelSpace:
    """The label space of a part family: objects and parts index the sorted sets of ``splitter(name)``
    over *all* ``class_names`` (pass the family's full class list, never one split's)."""
    pairs = [splitter(n) for n in class_names]
    objects = sorted({o for o, _ in pairs})
    parts = sorted({p for _, p in pairs})
    obj_id = {o: i for i, o in enumerate(objects)}
    part_id = {p: i for i, p in enumerate(parts)}
    return LabelSpace(
        family,
        tuple(class_names),
        tuple(objects),
        tuple(parts),
        tuple(obj_id[o] for o, _ in pairs),
        tuple(part_id[p] for _, p in pairs),
    )


# ------------------------------------------------------------------------------------------ COCO panoptic
def coco_panoptic_label_space() -> LabelSpace:
    """COCO panoptic's 133 classes from detectron2's ``COCO_CATEGORIES``, in id order (things 0-79,
    stuff 80-132); object id = class id, no parts. The COCO category id of class ``i`` is
    ``coco_panoptic_dataset_ids()[i]``."""
    names = tuple(c["name"] for c in _coco_categories())
    return LabelSpace("coco_panoptic", names, names, (), tuple(range(len(names))), (NO_PART,) * len(names))


def coco_panoptic_dataset_ids() -> tuple[int, ...]:
    """The COCO category id of each contiguous class (index = class id)."""
    return tuple(c["id"] for c in _coco_categories())


def _coco_categories() -> list[dict]:
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    cats = sorted(COCO_CATEGORIES, key=lambda c: c["id"])
    things = [c for c in cats if c["isthing"]]
    stuff = [c for c in cats if not c["isthing"]]
    return things + stuff  # already the id order (things have the lower ids); explicit for the rule


# ------------------------------------------------------------------------------------------ Pascal-Part
# The 93 classes of VLPart's Pascal-Part JSONs in their id order (ids 1-93): each object with its
# parts in the order VLPart numbers them.
_PASCAL_PART: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aeroplane", ("body", "wing", "tail", "wheel")),
    ("bicycle", ("wheel", "handlebar", "saddle")),
    ("bird", ("beak", "head", "eye", "leg", "foot", "wing", "neck", "tail", "torso")),
    ("bottle", ("body", "cap")),
    ("bus", ("license plate", "headlight", "door", "mirror", "window", "wheel")),
    ("car", ("license plate", "headlight", "door", "mirror", "window", "wheel")),
    ("cat", ("head", "leg", "ear", "eye", "paw", "neck", "nose", "tail", "torso")),
    ("cow", ("head", "leg", "ear", "eye", "neck", "horn", "muzzle", "tail", "torso")),
    ("dog", ("head", "leg", "ear", "eye", "paw", "neck", "nose", "muzzle", "tail", "torso")),
    ("horse", ("head", "leg", "ear", "eye", "neck", "muzzle", "tail", "torso")),
    ("motorbike", ("wheel", "handlebar", "headlight", "saddle")),
    ("person", ("hair", "head", "ear", "eye", "nose", "neck", "mouth", "arm", "hand", "leg", "foot", "torso")),
    ("potted plant", ("plant", "pot")),
    ("sheep", ("head", "leg", "ear", "eye", "neck", "horn", "muzzle", "tail", "torso")),
)
PASCAL_PART_NOVEL_OBJECTS = ("bus", "dog")
"""Objects whose 16 classes are left out of the base split (``train_base.json``: 77 classes)."""
PASCAL_PART_BASE_OBJECTS = tuple(o for o, _ in _PASCAL_PART if o not in PASCAL_PART_NOVEL_OBJECTS)


def pascal_part_class_names(base_only: bool = False) -> tuple[str, ...]:
    """The 93 ``object:part`` names in VLPart's id order (``base_only``: the 77 of the base split)."""
    return tuple(
        f"{obj}:{part}"
        for obj, parts in _PASCAL_PART
        if not (base_only and obj in PASCAL_PART_NOVEL_OBJECTS)
        for part in parts
    )


def pascal_part_label_space() -> LabelSpace:
    """Pascal-Part: 93 classes (class id = VLPart id - 1), 14 objects, 30 parts, for every split."""
    return object_part_label_space("pascal_part", pascal_part_class_names())


# ------------------------------------------------------------------------------------------ PartImageNet
# The 40 classes of PartImageNet (ids 0-39) as (supercategory, parts in id order).
_PARTIMAGENET: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Quadruped", ("Head", "Body", "Foot", "Tail")),
    ("Biped", ("Head", "Body", "Hand", "Foot", "Tail")),
    ("Fish", ("Head", "Body", "Fin", "Tail")),
    ("Bird", ("Head", "Body", "Wing", "Foot", "Tail")),
    ("Snake", ("Head", "Body")),
    ("Reptile", ("Head", "Body", "Foot", "Tail")),
    ("Car", ("Body", "Tier", "Side Mirror")),
    ("Bicycle", ("Body", "Head", "Seat", "Tier")),
    ("Boat", ("Body", "Sail")),
    ("Aeroplane", ("Head", "Body", "Engine", "Wing", "Tail")),
    ("Bottle", ("Mouth", "Body")),
)
_PARTIMAGENET_SUPERCATEGORIES = tuple(s for s, _ in _PARTIMAGENET)
# PartImageNet spells tyre "Tier" (SEMANTIC_SPEC §7 design choice: call it a tire).
_PARTIMAGENET_WORD_FIXES = {"tier": "tire"}


def partimagenet_class_names() -> tuple[str, ...]:
    """The 40 ``"Supercategory Part"`` names in PartImageNet's id order (0-39)."""
    return tuple(f"{sup} {part}" for sup, parts in _PARTIMAGENET for part in parts)


def partimagenet_object_part(name: str, supercategory: str | None = None) -> tuple[str, str]:
    """``"Car Side Mirror"`` -> ``("car", "side mirror")``: the object is the supercategory (from
    ``supercategory`` when given, else the name's first word), the part the **whole remainder**,
    both lower-cased, with ``tier`` -> ``tire``.

    Raises:
        LabelSpaceError: the name does not start with the supercategory, or has no part after it.
    """
    if not isinstance(name, str):
        raise LabelSpaceError(f"a PartImageNet class name must be a string, got {type(name).__name__} ({name!r})")
    words = name.split()
    sup = supercategory.split() if supercategory else words[:1]
    if not sup or [w.lower() for w in words[: len(sup)]] != [w.lower() for w in sup]:
        raise LabelSpaceError(f"PartImageNet class {name!r} does not start with its supercategory {supercategory!r}")
    part_words = [_PARTIMAGENET_WORD_FIXES.get(w.lower(), w.lower()) for w in words[len(sup):]]
    if not part_words:
        raise LabelSpaceError(
            f"PartImageNet class {name!r} is a supercategory without a part (expected 'Supercategory Part')"
        )
    return " ".join(w.lower() for w in sup), " ".join(part_words)


def partimagenet_label_space() -> LabelSpace:
    """PartImageNet: 40 classes (class id = PartImageNet id), 11 objects, 13 parts."""
    return object_part_label_space("partimagenet", partimagenet_class_names(), partimagenet_object_part)


# ------------------------------------------------------------------------------------------ PACO-LVIS
_QUALIFIER = re.compile(r"_\([^)]*\)")


def paco_class_name(name: str) -> str:
    """A PACO category name as ``object:part``: LVIS qualifiers ``_(...)`` removed, ``_`` -> space,
    lower-cased; an object entry (no ``:``) becomes ``object:whole``.

    ``car_(automobile):antenna`` -> ``car:antenna``; ``telephone:back_cover`` -> ``telephone:back cover``;
    ``handbag`` -> ``handbag:whole``.
    """
    if not isinstance(name, str):
        raise LabelSpaceError(f"a PACO category name must be a string, got {type(name).__name__} ({name!r})")
    clean = " ".join(_QUALIFIER.sub("", name).replace("_", " ").lower().split())
    if ":" not in clean:
        clean = f"{clean}:{WHOLE_PART}"
    return ":".join(s.strip() for s in clean.split(":"))


def paco_label_space(categories: Sequence[Mapping[str, Any]]) -> LabelSpace:
    """PACO-LVIS from a JSON's ``categories`` (``id``, ``name``): class id = index in id order (the
    ``class_names`` are the raw JSON names); objects and parts from :func:`paco_class_name`; the part
    vocabulary includes :data:`WHOLE_PART` when there are object entries.

    All PACO-LVIS JSONs list the same 531 categories (75 objects, 456 object-part classes), so every
    split gets the same ids.
    """
    cats = sorted(categories, key=lambda c: c["id"])
    return object_part_label_space(
        "paco_lvis", tuple(c["name"] for c in cats), lambda n: split_object_part(paco_class_name(n))
    )
