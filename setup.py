#!/usr/bin/env python
"""Install the `turbo` package: Turbo-Inference ROI heads for Detectron2.

Detectron2 itself is not on PyPI and must be installed first from its git repository
(see README.md); it is therefore not listed in ``install_requires``.
"""

from setuptools import find_packages, setup

setup(
    name="turbo",
    version="0.1.0",
    description="Training-free Turbo-Inference (mask-to-box refinement, Maskness, Soft-NMS) "
    "for Detectron2 Mask R-CNN and Cascade Mask R-CNN",
    packages=find_packages(include=["turbo", "turbo.*"]),
    python_requires=">=3.9",
    install_requires=["pycocotools>=2.0.2", "numpy", "Pillow", "matplotlib"],
    extras_require={"test": ["pytest", "hypothesis"]},
)
