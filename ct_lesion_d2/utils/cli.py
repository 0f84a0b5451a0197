"""What the command-line tools share to fail in one line: config errors with the closest valid
key, checked numeric options, and the third-party warnings the tools do not show.

Detectron2 calls ``torch.jit.script`` when imported, before any function here can run, so
the package's ``__init__`` installs that one filter itself before it imports Detectron2.
"""

import argparse
import difflib
import logging
import re
import warnings

__all__ = [
    "closest_config_key",
    "config_error_line",
    "positive_int",
    "probability",
    "quiet_third_party_warnings",
]

# Deprecation notices of torch and Detectron2 0.6 that say nothing about the user's run.
_QUIET = (
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    (UserWarning, r"torch\.meshgrid: in an upcoming release"),
    (UserWarning, r"The given NumPy array is not writable"),
)
# torch's logged notices about its own set-up (no CUDA runtime when the environment is
# collected; the is_fx_tracing deprecation in the first forward pass): errors only.
TORCH_NOTICE_LOGGERS = ("torch.utils.cpp_extension", "torch.fx._symbolic_trace")


def quiet_third_party_warnings():
    """Ignore the known third-party deprecation warnings (only those) in this process, and
    torch's set-up notices below ERROR (``--verbose`` tools skip this)."""
    for category, message in _QUIET:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in TORCH_NOTICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def positive_int(text):
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def probability(text):
    """argparse type: a float in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1; got {value:g}")
    return value


def _all_keys(node, prefix=""):
    for key, value in node.items():
        if hasattr(value, "items"):
            yield from _all_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def closest_config_key(key):
    """The valid config key (Detectron2's and this project's) closest to ``key``, or None."""
    from detectron2.config import get_cfg

    from ..config import add_ct_lesion_config

    cfg = get_cfg()
    add_ct_lesion_config(cfg)
    matches = difflib.get_close_matches(key, list(_all_keys(cfg)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def config_error_line(error, config_file):
    """One line for an error raised while building a config from a file and overrides.

    Args:
        error (Exception): from ``merge_from_file``/``merge_from_list`` (yacs raises
            ``KeyError``/``AssertionError`` for unknown keys, ``AssertionError`` for a missing
            file, ``ValueError`` for values of the wrong type; ``get_cfg_for`` raises
            ``FileNotFoundError`` for a config that is neither a file nor under ``configs/``).
        config_file (str): the file being merged.

    Returns:
        str or None: the message, or None when the error is none of these.
    """
    text = str(error.args[0]) if error.args else str(error)
    unknown = re.search(r"Non-existent (?:config )?key: ([\w.]+)", text)
    if unknown:
        key = unknown.group(1)
        closest = closest_config_key(key)
        hint = f"; did you mean {closest}?" if closest else ""
        return f"{config_file}: no config key {key} (in the file or the overrides){hint}"
    if isinstance(error, FileNotFoundError) or "does not exist" in text:
        return f"{config_file}: config file not found"
    if isinstance(error, (ValueError, TypeError)):
        return f"{config_file}: bad config value ({text})"
    return None
