"""What a report must say about the model and the scan before anything else: the model card
line (name, weights file and its SHA-256, training data when the checkpoint records it), the
date, and a scan name that does not leak the path (which often holds a patient ID)."""

import datetime
import os

__all__ = ["apply_umask", "model_card", "now_utc", "pseudonymous_source"]


def _training_data(path):
    """Training dataset names recorded in a checkpoint (``cfg`` or ``training_data``), if any."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return None
    if not isinstance(checkpoint, dict):
        return None
    from ..model_zoo import ZOO_RECORD_KEY

    record = checkpoint.get(ZOO_RECORD_KEY) or {}
    if record.get("training_data"):
        return list(record["training_data"])
    if checkpoint.get("training_data"):
        return list(checkpoint["training_data"])
    cfg = checkpoint.get("cfg")
    train = cfg.get("DATASETS", {}).get("TRAIN") if isinstance(cfg, dict) else None
    return list(train) if train else None


def model_card(config_file, weights):
    """The model card entry of the report's settings.

    Args:
        config_file (str): the model's config.
        weights (str): its checkpoint.

    Returns:
        dict: ``name`` (the zoo model's name when the weights are a zoo file, else the config
        name), ``weights_file`` (base name), ``weights_sha256``, ``training_data`` (dataset
        names, or None when the checkpoint does not record them), ``zoo_model`` (bool).
    """
    from ..model_zoo import ZOO_MODELS, file_sha256

    digest = file_sha256(weights)
    zoo = [name for name, entry in ZOO_MODELS.items() if entry["sha256"] == digest]
    return {
        "name": zoo[0] if zoo else os.path.splitext(os.path.basename(config_file))[0],
        "weights_file": os.path.basename(weights),
        "weights_sha256": digest,
        "training_data": _training_data(weights),
        "zoo_model": bool(zoo),
    }


def pseudonymous_source(path, full_path=False):
    """The input's base name (its folders often name the patient), or the full path if asked."""
    return str(path) if full_path else os.path.basename(os.path.normpath(str(path)))


def now_utc():
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def apply_umask(folder):
    """Give ``folder`` and everything in it the modes of ordinary output under the umask
    (0644/0755 usually): staged folders and atomic writes start private (0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
