"""The synthetic datasets the reference models are trained and measured on: the shapes
generator (:mod:`.shapes`), the photo-like scenes generator (:mod:`.scenes`), the shapes
panoptic generator (:mod:`.panoptic`), their COCO writer (:mod:`.writer`), disk cache
(:mod:`.cache`) and Detectron2 registration (:mod:`.catalog`)."""

from .cache import DEFAULT_ROOT, ENV_ROOT, dataset_root, ensure_shapes, ensure_split, split_dir
from .catalog import (
    DEFAULT_SPLITS,
    PANOPTIC_SPLITS,
    SCENE_SPLITS,
    register_panoptic,
    register_panoptic_split,
    register_scenes,
    register_shapes,
    register_shapes_split,
    register_split,
    register_synthetic_datasets,
    register_tiny_panoptic,
    register_tiny_shapes,
    shapes_metadata,
)
from .panoptic import (
    PANOPTIC_VERSION,
    STUFF_CLASSES,
    generate_panoptic,
    make_panoptic,
    panoptic_metadata,
)
from .scenes import SCENE_CLASSES, SCENES_VERSION, generate_scene, make_scenes
from .shapes import (
    GENERATOR_VERSION,
    IMAGE_SIZE,
    NUM_CLASSES,
    SHAPE_CLASSES,
    generate_image,
    make_shapes,
)

__all__ = [
    "GENERATOR_VERSION",
    "SHAPE_CLASSES",
    "NUM_CLASSES",
    "IMAGE_SIZE",
    "generate_image",
    "make_shapes",
    "ENV_ROOT",
    "DEFAULT_ROOT",
    "dataset_root",
    "split_dir",
    "ensure_shapes",
    "ensure_split",
    "DEFAULT_SPLITS",
    "shapes_metadata",
    "register_shapes_split",
    "register_shapes",
    "register_tiny_shapes",
    "SCENE_SPLITS",
    "register_split",
    "register_scenes",
    "register_synthetic_datasets",
    "SCENES_VERSION",
    "SCENE_CLASSES",
    "generate_scene",
    "make_scenes",
    "PANOPTIC_SPLITS",
    "register_panoptic_split",
    "register_panoptic",
    "register_tiny_panoptic",
    "PANOPTIC_VERSION",
    "STUFF_CLASSES",
    "generate_panoptic",
    "make_panoptic",
    "panoptic_metadata",
]
