"""Registration of the synthetic splits (shapes, scenes, shapes panoptic) in Detectron2's
``DatasetCatalog`` and ``MetadataCatalog``."""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Tuple

from .cache import dataset_root, ensure_split, split_dir
from .panoptic import PANOPTIC_IMAGE_SIZE, panoptic_metadata, panoptic_paths
from .scenes import CROWD_IMAGE_SIZE, SCENE_CLASSES, SCENE_IMAGE_SIZE
from .shapes import IMAGE_SIZE, SHAPE_CLASSES

__all__ = [
    "DEFAULT_SPLITS",
    "SCENE_SPLITS",
    "shapes_metadata",
    "register_split",
    "register_shapes_split",
    "register_shapes",
    "register_tiny_shapes",
    "register_scenes",
    "PANOPTIC_SPLITS",
    "register_panoptic_split",
    "register_panoptic",
    "register_tiny_panoptic",
    "register_synthetic_datasets",
]

TRAIN_IMAGES, TRAIN_SEED = 2000, 0
VAL_IMAGES, VAL_SEED = 200, 1
TUNE_IMAGES, TUNE_SEED = 200, 2
# A larger tuning split for choices that differ by less than shapes_tune's noise: the same seed,
# so its first TUNE_IMAGES images are shapes_tune's (an image depends on (seed, index) only).
TUNE_LARGE_IMAGES = 1000
# A larger validation split, likewise (its first VAL_IMAGES images are shapes_val's), for
# measurements whose differences lie within shapes_val's noise (precision above a score).
VAL_LARGE_IMAGES = 1000

# name -> (split, num_images, seed, image_size)
DEFAULT_SPLITS: Dict[str, Tuple[str, int, int, Tuple[int, int]]] = {
    "shapes_train": ("train", TRAIN_IMAGES, TRAIN_SEED, IMAGE_SIZE),
    "shapes_val": ("val", VAL_IMAGES, VAL_SEED, IMAGE_SIZE),
    "shapes_tune": ("tune", TUNE_IMAGES, TUNE_SEED, IMAGE_SIZE),
    "shapes_tune_large": ("tune", TUNE_LARGE_IMAGES, TUNE_SEED, IMAGE_SIZE),
    "shapes_val_large": ("val", VAL_LARGE_IMAGES, VAL_SEED, IMAGE_SIZE),
}


SCENES_VAL_SEED, SCENES_TUNE_SEED = 11, 12

# The photo-like scenes (turbo.datasets.scenes): name -> (split, num_images, seed, image_size,
# crowd). scenes_crowd_val: every image holds 30 to 80 objects. scenes_val_large and
# scenes_tune_large: as shapes_val_large and shapes_tune_large, their first 200 images are
# scenes_val's and scenes_tune's.
SCENE_SPLITS: Dict[str, Tuple[str, int, int, Tuple[int, int], Optional[bool]]] = {
    "scenes_train": ("train", 2000, 10, SCENE_IMAGE_SIZE, None),
    "scenes_val": ("val", VAL_IMAGES, SCENES_VAL_SEED, SCENE_IMAGE_SIZE, None),
    "scenes_val_large": ("val", VAL_LARGE_IMAGES, SCENES_VAL_SEED, SCENE_IMAGE_SIZE, None),
    "scenes_tune": ("tune", TUNE_IMAGES, SCENES_TUNE_SEED, SCENE_IMAGE_SIZE, None),
    "scenes_tune_large": ("tune", TUNE_LARGE_IMAGES, SCENES_TUNE_SEED, SCENE_IMAGE_SIZE, None),
    "scenes_crowd_val": ("crowd_val", 100, 13, CROWD_IMAGE_SIZE, True),
}
_CLASSES = {"shapes": SHAPE_CLASSES, "scenes": SCENE_CLASSES}

# The shapes panoptic (turbo.datasets.panoptic): base name -> (split, num_images, seed,
# image_size). Each registers as "<name>_separated" (Panoptic FPN's) and "<name>_stuffonly".
PANOPTIC_SPLITS: Dict[str, Tuple[str, int, int, Tuple[int, int]]] = {
    "shapes_panoptic_train": ("train", 2000, 20, PANOPTIC_IMAGE_SIZE),
    "shapes_panoptic_val": ("val", 200, 21, PANOPTIC_IMAGE_SIZE),
    "shapes_panoptic_tune": ("tune", 200, 22, PANOPTIC_IMAGE_SIZE),
}


def shapes_metadata(generator: str = "shapes") -> dict:
    """Detectron2 metadata of a synthetic dataset (``generator`` "shapes" or "scenes")."""
    classes = _CLASSES[generator]
    return {
        "thing_classes": list(classes),
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(classes))},
        "evaluator_type": "coco",
    }


def register_shapes_split(
    name: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = IMAGE_SIZE,
    root: Optional[str] = None,
    eager: bool = False,
) -> str:
    """:func:`register_split` of a shapes split."""
    return register_split(name, "shapes", split, num_images, seed, image_size, root, eager)


def register_split(
    name: str,
    generator: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int],
    root: Optional[str] = None,
    eager: bool = False,
    **options,
) -> str:
    """Register one split of a synthetic dataset (``generator`` "shapes" or "scenes", with
    its ``options``) as Detectron2 dataset ``name``; returns its json path.

    Uses ``register_coco_instances`` (metadata: json_file, image_root, evaluator_type "coco",
    thing_classes); the DatasetCatalog loader generates the data on first use. With
    ``eager=True`` the data are generated now (needed before building a COCOEvaluator
    without loading the dataset first; :func:`ensure_split` does the same). Names already
    in the DatasetCatalog are left untouched (idempotent).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json, register_coco_instances

    if name in DatasetCatalog.list():
        return MetadataCatalog.get(name).json_file
    root = dataset_root(root)
    final = split_dir(split, num_images, seed, image_size, root, generator)
    json_file = os.path.join(final, f"{split}.json")
    image_root = os.path.join(final, split)
    if eager:
        ensure_split(generator, split, num_images, seed, image_size, root, **options)
    meta = shapes_metadata(generator)
    meta.pop("evaluator_type")  # register_coco_instances sets evaluator_type="coco" itself
    register_coco_instances(name, meta, json_file, image_root)

    def _load():
        ensure_split(generator, split, num_images, seed, image_size, root, **options)
        return load_coco_json(json_file, image_root, name)

    DatasetCatalog.remove(name)  # swap in the lazily generating loader
    DatasetCatalog.register(name, _load)
    return json_file


def register_shapes(
    root: Optional[str] = None, splits: Iterable[str] = tuple(DEFAULT_SPLITS), eager: bool = False
) -> Dict[str, str]:
    """Register ``shapes_train`` / ``shapes_val`` / ``shapes_tune`` / ``shapes_tune_large`` /
    ``shapes_val_large`` (or the given subset); each is generated on first use.

    Returns {name: json_file}. Idempotent.
    """
    out = {}
    for name in splits:
        split, n, seed, size = DEFAULT_SPLITS[name]
        out[name] = register_shapes_split(name, split, n, seed, size, root=root, eager=eager)
    return out


def register_tiny_shapes(
    root: Optional[str] = None,
    name: str = "shapes_tiny",
    num_images: int = 4,
    seed: int = 1234,
    image_size: Tuple[int, int] = (64, 96),
    eager: bool = False,
) -> str:
    """Register a tiny shapes dataset (for tests and smoke runs); returns its json path."""
    return register_shapes_split(name, name, num_images, seed, image_size, root=root, eager=eager)


def register_scenes(
    root: Optional[str] = None, splits: Iterable[str] = tuple(SCENE_SPLITS), eager: bool = False
) -> Dict[str, str]:
    """Register ``scenes_train`` / ``scenes_val`` / ``scenes_val_large`` / ``scenes_tune`` /
    ``scenes_tune_large`` / ``scenes_crowd_val`` (or the given subset), the photo-like domain;
    each is generated on first use. Returns {name: json_file}. Idempotent."""
    out = {}
    for name in splits:
        split, n, seed, size, crowd = SCENE_SPLITS[name]
        out[name] = register_split(
            name, "scenes", split, n, seed, size, root=root, eager=eager, crowd=crowd
        )
    return out


def register_panoptic_split(
    name: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = PANOPTIC_IMAGE_SIZE,
    root: Optional[str] = None,
    eager: bool = False,
) -> str:
    """Register one split of the shapes panoptic with Detectron2's
    ``register_coco_panoptic_separated``: ``<name>_separated`` (instances and semantic labels,
    evaluator_type "coco_panoptic_seg") and ``<name>_stuffonly`` (semantic labels,
    "sem_seg"); returns ``<name>_separated``.

    The DatasetCatalog loaders generate the data on first use (``eager=True``: now). Names
    already registered are left untouched (idempotent).
    """
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import (
        load_coco_json,
        load_sem_seg,
        register_coco_panoptic_separated,
    )
    from detectron2.data.datasets.coco_panoptic import merge_to_panoptic

    separated, stuffonly = f"{name}_separated", f"{name}_stuffonly"
    if separated in DatasetCatalog.list():
        return separated
    root = dataset_root(root)
    paths = panoptic_paths(split_dir(split, num_images, seed, image_size, root, "panoptic"), split)

    def ensure() -> None:
        ensure_split("panoptic", split, num_images, seed, image_size, root)

    if eager:
        ensure()
    register_coco_panoptic_separated(
        name,
        panoptic_metadata(),
        paths["image_root"],
        paths["panoptic_root"],
        paths["panoptic_json"],
        paths["sem_seg_root"],
        paths["instances_json"],
    )

    def load_separated():
        ensure()
        return merge_to_panoptic(
            load_coco_json(paths["instances_json"], paths["image_root"], separated),
            load_sem_seg(paths["sem_seg_root"], paths["image_root"]),
        )

    def load_stuffonly():
        ensure()
        return load_sem_seg(paths["sem_seg_root"], paths["image_root"])

    for registered, load in ((separated, load_separated), (stuffonly, load_stuffonly)):
        DatasetCatalog.remove(registered)  # swap in the lazily generating loaders
        DatasetCatalog.register(registered, load)
    return separated


def register_panoptic(
    root: Optional[str] = None,
    splits: Iterable[str] = tuple(PANOPTIC_SPLITS),
    eager: bool = False,
) -> Dict[str, str]:
    """Register ``shapes_panoptic_train`` / ``shapes_panoptic_val`` / ``shapes_panoptic_tune``
    (or the given subset),
    each as ``<name>_separated`` and ``<name>_stuffonly``, generated on first use. Returns
    {name: separated name}. Idempotent."""
    out = {}
    for name in splits:
        split, n, seed, size = PANOPTIC_SPLITS[name]
        out[name] = register_panoptic_split(name, split, n, seed, size, root=root, eager=eager)
    return out


def register_tiny_panoptic(
    root: Optional[str] = None,
    name: str = "shapes_panoptic_tiny",
    num_images: int = 4,
    seed: int = 4321,
    image_size: Tuple[int, int] = (96, 128),
    eager: bool = False,
) -> str:
    """Register a tiny shapes panoptic split (for tests and smoke runs); returns its
    ``<name>_separated`` name."""
    return register_panoptic_split(name, name, num_images, seed, image_size, root, eager)


def register_synthetic_datasets(root: Optional[str] = None) -> None:
    """Register every synthetic dataset the entry points and scripts know: the shapes splits
    (``shapes_train``, ``shapes_val``, ``shapes_tune``, ``shapes_tune_large``,
    ``shapes_val_large``, ``shapes_tiny`` for smoke runs), the photo-like scenes splits
    (``scenes_train``, ``scenes_val``, ``scenes_val_large``, ``scenes_tune``,
    ``scenes_tune_large``, ``scenes_crowd_val``) and the shapes panoptic splits
    (``shapes_panoptic_{train,val,tune,tiny}_separated`` and ``_stuffonly``), each generated
    on first use under ``$TURBO_DATASETS`` (Detectron2 registers its builtin
    datasets, COCO and the others, itself). Idempotent."""
    register_shapes(root)
    register_tiny_shapes(root)
    register_scenes(root)
    register_panoptic(root)
    register_tiny_panoptic(root)
