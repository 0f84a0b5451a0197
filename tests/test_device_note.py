"""The CUDA fallback note: shown only when the config file, the overrides or an option asked
for CUDA on a machine without it; configs that leave Detectron2's default device alone fall
back to the CPU silently."""

import logging

import pytest
import torch

from ct_lesion_d2.config import device_asked, get_cfg_for

NOTE = "CUDA is not available: using the CPU"
CPU_CONFIG = "mask_rcnn_R18_T1_FPN1_synthetic_cpu.yaml"  # sets no MODEL.DEVICE


@pytest.fixture
def no_cuda(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    caplog.set_level(logging.DEBUG, logger="ct_lesion_d2")
    return caplog


def warnings_of(caplog):
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("ct_lesion_d2")
    ]


def test_cpu_config_falls_back_silently(no_cuda):
    cfg = get_cfg_for(CPU_CONFIG)
    assert cfg.MODEL.DEVICE == "cpu" and warnings_of(no_cuda) == []
    assert any(NOTE in r.getMessage() for r in no_cuda.records)  # at DEBUG, for --verbose


def test_cuda_asked_in_the_overrides_or_as_option_is_noted(no_cuda):
    cfg = get_cfg_for(CPU_CONFIG, ["MODEL.DEVICE", "cuda:1"])
    assert cfg.MODEL.DEVICE == "cpu"
    assert warnings_of(no_cuda) == [f"MODEL.DEVICE=cuda:1 but {NOTE}"]
    no_cuda.clear()
    get_cfg_for(CPU_CONFIG, device="cuda")
    assert warnings_of(no_cuda) == [f"MODEL.DEVICE=cuda but {NOTE}"]


def test_cuda_asked_in_the_file_or_its_base_is_noted(no_cuda, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("MODEL:\n  DEVICE: cuda\n")
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text('_BASE_: "base.yaml"\nSEED: 3\n')
    assert device_asked(str(leaf)) and not device_asked(CPU_CONFIG)
    assert device_asked(CPU_CONFIG, ["SEED", "1", "MODEL.DEVICE", "cpu"])
    cfg = get_cfg_for(str(leaf))
    assert cfg.MODEL.DEVICE == "cpu" and cfg.SEED == 3
    assert warnings_of(no_cuda) == [f"MODEL.DEVICE=cuda but {NOTE}"]
