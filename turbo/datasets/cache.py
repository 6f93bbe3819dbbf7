"""On-disk cache of generated splits of the synthetic datasets (shapes, scenes, shapes panoptic).

Splits are generated lazily under ``$TURBO_DATASETS`` (default ``~/.cache/turbo/datasets``)
in a folder whose name encodes the generator version, split, seed, image count and image
size. Generation writes to a temporary folder that is renamed into place under a file lock,
so concurrent processes never see partial data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Callable, Dict, Optional, Tuple

from .panoptic import PANOPTIC_VERSION, make_panoptic
from .scenes import SCENES_VERSION, make_scenes
from .shapes import GENERATOR_VERSION, IMAGE_SIZE, make_shapes

__all__ = [
    "ENV_ROOT",
    "DEFAULT_ROOT",
    "GENERATORS",
    "dataset_root",
    "split_dir",
    "ensure_split",
    "ensure_shapes",
]

# generator name -> (version, make function(out_dir, split, num_images, seed, image_size, **kw))
GENERATORS: Dict[str, Tuple[int, Callable[..., str]]] = {
    "shapes": (GENERATOR_VERSION, make_shapes),
    "scenes": (SCENES_VERSION, make_scenes),
    "panoptic": (PANOPTIC_VERSION, make_panoptic),
}

ENV_ROOT = "TURBO_DATASETS"
DEFAULT_ROOT = os.path.expanduser("~/.cache/turbo/datasets")


def dataset_root(root: Optional[str] = None) -> str:
    """Cache root: ``root`` if given, else ``$TURBO_DATASETS``, else ``~/.cache/turbo/datasets``."""
    if root is None:
        root = os.environ.get(ENV_ROOT) or DEFAULT_ROOT
    return os.path.abspath(os.path.expanduser(root))


def split_dir(
    split: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = IMAGE_SIZE,
    root: Optional[str] = None,
    generator: str = "shapes",
) -> str:
    """Folder holding ``<split>.json`` and ``<split>/`` for these generator parameters."""
    h, w = int(image_size[0]), int(image_size[1])
    version = GENERATORS[generator][0]
    name = f"{generator}-v{version}-{split}-seed{int(seed)}-n{int(num_images)}-{h}x{w}"
    return os.path.join(dataset_root(root), name)


@contextlib.contextmanager
def _file_lock(path: str):
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def ensure_split(
    generator: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int],
    root: Optional[str] = None,
    **options,
) -> Tuple[str, str]:
    """Generate the split of ``generator`` ("shapes", "scenes" or "panoptic", with its
    ``options``) into the cache if missing. Returns (json_file, image_root): the COCO
    instances json and the images (a panoptic split's other files lie beside them,
    :func:`turbo.datasets.panoptic.panoptic_paths`).

    Safe with concurrent callers: generation happens in a temporary folder under an
    exclusive file lock and is moved into place with an atomic rename.
    """
    final = split_dir(split, num_images, seed, image_size, root, generator)
    json_file = os.path.join(final, f"{split}.json")
    image_root = os.path.join(final, split)
    if os.path.isfile(json_file):
        return json_file, image_root
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    make = GENERATORS[generator][1]
    with _file_lock(final + ".lock"):
        if not os.path.isfile(json_file):
            tmp = tempfile.mkdtemp(prefix=os.path.basename(final) + ".tmp-", dir=parent)
            try:
                make(tmp, split, num_images, seed, image_size, **options)
                if os.path.isdir(final):  # stale incomplete folder (not ours to trust)
                    shutil.rmtree(final)
                os.replace(tmp, final)
            finally:
                if os.path.isdir(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
    return json_file, image_root


def ensure_shapes(
    split: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = IMAGE_SIZE,
    root: Optional[str] = None,
) -> Tuple[str, str]:
    """:func:`ensure_split` of the shapes generator."""
    return ensure_split("shapes", split, num_images, seed, image_size, root)
