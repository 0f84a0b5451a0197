"""Make ``detectron2.export`` importable where caffe2 is absent.

Detectron2 0.6's ``detectron2/export/__init__.py`` imports its Caffe2 exporter unconditionally,
and caffe2 is no longer part of PyTorch, so ``import detectron2.export`` (and with it
``TracingAdapter`` and ``detectron2.utils.analysis``) fails with ``No module named 'caffe2'``.
Later Detectron2 releases import the Caffe2 part only when caffe2 exists. This module does the
same for 0.6: it builds the ``detectron2.export`` package from the same directory without the
Caffe2 part, so ``TracingAdapter``, ``scripting_with_instances`` and ``dump_torchscript_IR``
are Detectron2's own.
"""

import importlib
import os
import sys
import types


def ensure_detectron2_export():
    """Import ``detectron2.export``; without caffe2, load it without its Caffe2 exporter.

    Returns:
        module: the ``detectron2.export`` package (its ``TracingAdapter`` is Detectron2's).
    """
    try:
        return importlib.import_module("detectron2.export")
    except ImportError as e:
        if "caffe2" not in str(e):
            raise
    import detectron2

    package = types.ModuleType("detectron2.export")
    package.__path__ = [os.path.join(os.path.dirname(detectron2.__file__), "export")]
    package.__package__ = "detectron2.export"
    package.__doc__ = "detectron2.export without the Caffe2 exporter (caffe2 is not installed)"
    sys.modules["detectron2.export"] = package
    detectron2.export = package
    flatten = importlib.import_module("detectron2.export.flatten")
    torchscript = importlib.import_module("detectron2.export.torchscript")
    package.TracingAdapter = flatten.TracingAdapter
    package.scripting_with_instances = torchscript.scripting_with_instances
    package.dump_torchscript_IR = torchscript.dump_torchscript_IR
    package.__all__ = ["TracingAdapter", "scripting_with_instances", "dump_torchscript_IR"]
    return package


ensure_detectron2_export()
