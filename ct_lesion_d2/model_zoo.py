"""The model variants of the paper, their config files and their published sizes; and the
trained weights that ship with the project (``ZOO_MODELS``, docs/MODEL_ZOO.md)."""

import hashlib
import os
from collections import OrderedDict

import torch

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# Detectron2's box and mask predictors have no background slot; torchvision's (the reference
# implementation's) do: 4 * (128 + 1) box-regression and 128 + 1 mask-logit elements more.
TORCHVISION_PREDICTOR_EXTRA = 645
# The classifier has no mask head: only the 4 * (128 + 1) box-regression elements differ.
TORCHVISION_CLASSIFIER_EXTRA = 516

# name -> (config file, paper Table 1 in millions, the reference arithmetic
# of docs/PAPER.md, section 4)
SEGMENTATION_VARIANTS = OrderedDict(
    [
        ("mask_rcnn_R18", ("mask_rcnn_R18_FPN1_lesion.yaml", 14.52, 14_520_694)),
        ("mask_rcnn_R18_T1", ("mask_rcnn_R18_T1_FPN1_lesion.yaml", 6.12, 6_056_305)),
        ("mask_rcnn_R18_T2", ("mask_rcnn_R18_T2_FPN1_lesion.yaml", 4.02, 3_921_260)),
        ("mask_rcnn_R34", ("mask_rcnn_R34_FPN1_lesion.yaml", 24.63, 24_636_294)),
        ("mask_rcnn_R34_T1", ("mask_rcnn_R34_T1_FPN1_lesion.yaml", 11.45, 11_449_215)),
        ("mask_rcnn_R34_T2", ("mask_rcnn_R34_T2_FPN1_lesion.yaml", 4.68, 4_587_378)),
        ("mask_rcnn_R50", ("mask_rcnn_R50_FPN_lesion.yaml", 31.78, 31_781_015)),
    ]
)

# COVID-CT-Mask-Net classifiers, same layout; the R50 baseline has no published size (None).
CLASSIFIER_VARIANTS = OrderedDict(
    [
        ("classifier_R18", ("classifier_R18_covidx.yaml", 14.75, 14_752_119)),
        ("classifier_R18_T1", ("classifier_R18_T1_covidx.yaml", 6.35, 6_287_730)),
        ("classifier_R18_T2", ("classifier_R18_T2_covidx.yaml", 4.25, 4_152_685)),
        ("classifier_R34", ("classifier_R34_covidx.yaml", 24.86, 24_867_719)),
        ("classifier_R34_T1", ("classifier_R34_T1_covidx.yaml", 11.74, 11_680_640)),
        ("classifier_R34_T2", ("classifier_R34_T2_covidx.yaml", 4.92, 4_818_803)),
        ("classifier_R50", ("classifier_R50_covidx.yaml", None, None)),
    ]
)

# Module S with B = 128, F = 512 (docs/PAPER.md, section 4).
S_MODULE_REFERENCE = 592_387


def config_path(name):
    """Path of a variant's config file, from its name or a file name under ``configs/``."""
    variants = {**SEGMENTATION_VARIANTS, **CLASSIFIER_VARIANTS}
    if name in variants:
        name = variants[name][0]
    path = name if os.path.isfile(name) else os.path.join(CONFIG_DIR, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such config (variants: {list(variants)})")
    return path


def get_config(name, opts=()):
    """A variant's config: :func:`ct_lesion_d2.config.get_cfg_for` under its model-zoo name.

    Args:
        name (str): variant name (``mask_rcnn_R18_T1``, ``classifier_R18_T1``), config file
            name or path.
        opts (list[str]): ``KEY VALUE`` overrides, as on the command line.

    Returns:
        CfgNode: unfrozen.
    """
    from .config import get_cfg_for

    return get_cfg_for(name, opts)


# ----------------------------------------------------------------------------- trained weights

# Trained weights shipped with the package (docs/MODEL_ZOO.md): float16 state dicts with the
# config and the training record, under ZOO_DIR.
ZOO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo_files")
# The model the tools use when no weights are given.
DEFAULT_ZOO_MODEL = "ct_lesion_R18_T1_realct"
# name -> task ("segmentation": a lesion segmenter; "classification": a CTMaskNetClassifier,
# complete with its frozen detector), config file, weights file under ZOO_DIR, its sha256 and
# the data it was trained on
ZOO_MODELS = OrderedDict(
    [
        (
            "ct_lesion_R18_T1_realct",
            {
                "task": "segmentation",
                "config": "mask_rcnn_R18_T1_FPN1_realct_2h_cpu.yaml",
                "file": "ct_lesion_R18_T1_realct.pth",
                "sha256": "c7746fcd72b6ea31ea7eedc141ddc8a6491ba48795dc73959a4f542c4eae8540",
                "training_data": "medseg100 (64 slices) + covid19_ct_seg (917 slices, 11 volumes)",
            },
        ),
        (
            "ct_classifier_R18_T1_ucsd",
            {
                "task": "classification",
                "config": "classifier_R18_T1_ucsd_realct_detector_backbone_swa_cpu.yaml",
                "file": "ct_classifier_R18_T1_ucsd.pth",
                "sha256": "5a99fac874a1a4bf644033b51f568d0063d91d36c690fab74e8dd9a84897b811",
                "training_data": "UCSD COVID-CT train split (297 slices), on the frozen "
                "ct_lesion_R18_T1_realct detector",
            },
        ),
    ]
)
# Key of the zoo files' record of how they were made.
ZOO_RECORD_KEY = "ct_lesion_d2"
ZOO_TASKS = ("segmentation", "classification")


def zoo_models(task):
    """The names of the ``ZOO_MODELS`` of one task ("segmentation" or "classification")."""
    if task not in ZOO_TASKS:
        raise ValueError(f"zoo task must be one of {ZOO_TASKS}, got {task!r}")
    return [name for name, entry in ZOO_MODELS.items() if entry["task"] == task]


class ZooModelError(RuntimeError):
    """A zoo model is unknown, or its file is missing or not the published one."""


def file_sha256(path, chunk=1 << 20):
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def zoo_entry(name, task=None):
    """The ``ZOO_MODELS`` entry of a name.

    Args:
        name (str): a key of ``ZOO_MODELS``.
        task (str or None): the task the caller needs ("segmentation", "classification");
            None takes either.

    Raises:
        ZooModelError: unknown name, or one of another task.
    """
    known = zoo_models(task) if task else list(ZOO_MODELS)
    if name not in known:
        what = f"{task} zoo model" if task else "zoo model"
        raise ZooModelError(f"unknown {what} {name!r}; available: {known}")
    return ZOO_MODELS[name]


def zoo_weights(name, task=None):
    """Path of a zoo model's weights (:func:`zoo_entry`), after checking the file's sha256.

    Raises:
        ZooModelError: unknown name or one of another task, missing file or a hash that is
            not the published one.
    """
    entry = zoo_entry(name, task)
    path = os.path.join(ZOO_DIR, entry["file"])
    if not os.path.isfile(path):
        raise ZooModelError(
            f"{path}: weights of zoo model {name} not found; reinstall ct-lesion-d2 from a full "
            "checkout (the file is part of the repository)"
        )
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise ZooModelError(
            f"{path}: sha256 {digest} is not the published {entry['sha256']} of zoo model "
            f"{name} (damaged or replaced file); restore it from the repository"
        )
    return path


def get_zoo_config(name=DEFAULT_ZOO_MODEL, opts=()):
    """The config of a zoo model with ``MODEL.WEIGHTS`` set to its checked weights file.

    Args:
        name (str): a key of ``ZOO_MODELS``.
        opts (list[str]): further ``KEY VALUE`` overrides.

    Returns:
        CfgNode: unfrozen.
    """
    weights = zoo_weights(name)
    return get_config(ZOO_MODELS[name]["config"], ["MODEL.WEIGHTS", weights] + list(opts))


def write_zoo_file(checkpoint, output, cfg, **record):
    """Write a compact zoo file from a training checkpoint: the model's floating-point tensors
    in float16 (others unchanged), no optimizer or scheduler state, and a record of how it was
    made (``record`` plus the config, its training data and the software version).

    Args:
        checkpoint (str): a ``model_*.pth`` written by the trainer.
        output (str): the new file; an existing one is never replaced.
        cfg (CfgNode): the config the model was trained with.
        record: further JSON-like facts (iterations, minutes, machine, date).

    Returns:
        str: sha256 of the written file.
    """
    from . import __version__
    from .utils.files import atomic_write, refuse_existing

    refuse_existing([output], overwrite=False)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = {k: (v.half() if v.is_floating_point() else v) for k, v in state["model"].items()}
    facts = {
        "config": cfg.dump(),
        "training_data": list(cfg.DATASETS.TRAIN),
        "iteration": int(state.get("iteration", -1)),
        "software": f"ct_lesion_d2 {__version__}",
        **record,
    }
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    atomic_write(output, lambda f: torch.save({"model": model, ZOO_RECORD_KEY: facts}, f))
    os.chmod(output, 0o644)  # a file to ship and read, not a private temporary
    return file_sha256(output)


def zoo_record(path):
    """The record a zoo file carries (config, training data, iterations...), or None."""
    return torch.load(path, map_location="cpu", weights_only=True).get(ZOO_RECORD_KEY)
