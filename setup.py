#!/usr/bin/env python
"""ct-lesion-d2: lightweight COVID-CT-Mask-Net on Detectron2.

Detectron2 is not on PyPI and is therefore not listed in install_requires: install it first
(``tools/setup_env.sh`` does, by the official source or the pb1-detectron2 0.6 fallback).
"""
from setuptools import find_packages, setup

setup(
    name="ct_lesion_d2",
    version="0.1.0",
    description="COVID-19 lesion segmentation and CT classification on Detectron2",
    python_requires=">=3.9",
    packages=find_packages(exclude=("tests", "tools", "configs")),
    # the model zoo's trained weights (ct_lesion_d2/model_zoo.py, docs/MODEL_ZOO.md)
    package_data={"ct_lesion_d2": ["zoo_files/*.pth"]},
    install_requires=["numpy", "scipy", "Pillow", "pycocotools", "matplotlib", "tqdm"],
    extras_require={"test": ["pytest"]},
)
