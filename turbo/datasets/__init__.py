"""The synthetic datasets the reference models are trained and measured on: the shapes
generator (:mod:`.shapes`), its disk cache (:mod:`.cache`) and Detectron2 registration
(:mod:`.catalog`)."""

from .cache import DEFAULT_ROOT, ENV_ROOT, dataset_root, ensure_shapes, split_dir
from .catalog import (
    DEFAULT_SPLITS,
    register_all_shapes,
    register_shapes,
    register_shapes_split,
    register_tiny_shapes,
    shapes_metadata,
)
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
    "DEFAULT_SPLITS",
    "shapes_metadata",
    "register_shapes_split",
    "register_shapes",
    "register_tiny_shapes",
    "register_all_shapes",
]
