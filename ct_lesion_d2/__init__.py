"""ct-lesion-d2: COVID-19 lesion segmentation and chest-CT classification on Detectron2.

Importing the package registers its backbones, meta-architectures and datasets.
"""

from . import data, modeling  # noqa: F401  (registers datasets and backbones)
from .config import add_ct_lesion_config
from .utils import ensure_detectron2_C  # noqa: F401  (must run before Detectron2 submodules)

__all__ = ["add_ct_lesion_config"]
__version__ = "0.1.0"
