"""ct-lesion-d2: COVID-19 lesion segmentation and chest-CT classification on Detectron2.

Importing the package registers its backbones, meta-architectures and datasets.
"""

# isort: skip_file  (the order below matters: the filter, then the _C check, then Detectron2)
import warnings

# Importing Detectron2 calls torch.jit.script, which torch 2.14 deprecates: a notice about this
# package's dependencies, not about the user's run, so every entry point is spared it (the
# other third-party notices are filtered by the tools, ct_lesion_d2.utils.cli).
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
)

from .utils import ensure_detectron2_C  # noqa: E402,F401  (before Detectron2 submodules)
from .config import add_ct_lesion_config  # noqa: E402
from . import data, modeling  # noqa: E402,F401  (registers datasets and backbones)

__all__ = ["add_ct_lesion_config"]
__version__ = "0.1.0"
