#!/usr/bin/env python
"""Install the `turbo` package: Turbo-Inference ROI heads for Detectron2.

Detectron2 itself is not on PyPI and must be installed first from its git repository
(README.md, Install); it is therefore not listed in ``install_requires``.
"""

import os
import re

from setuptools import find_packages, setup


def version() -> str:
    """``turbo.__version__``, read from the source (importing turbo needs Detectron2)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "turbo", "__init__.py")
    with open(path) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


setup(
    name="turbo",
    version=version(),
    description="Training-free Turbo-Inference (mask-to-box refinement, Maskness, Soft-NMS) "
    "for Detectron2 Mask R-CNN and Cascade Mask R-CNN",
    license="Apache-2.0",
    packages=find_packages(include=["turbo", "turbo.*"]),
    python_requires=">=3.9",
    install_requires=["pycocotools>=2.0.2", "numpy", "Pillow", "matplotlib"],
    extras_require={
        "export": ["onnx", "onnxruntime"],
        "test": ["pytest", "hypothesis", "onnx", "onnxruntime"],
    },
)
