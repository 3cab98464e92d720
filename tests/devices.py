"""Devices a kernel test runs on: the CPU (Triton interpreter) always, CUDA when present (`-m gpu`)."""

import pytest
import torch

DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu,
                                                   pytest.mark.skipif(not torch.cuda.is_available(),
                                                                      reason="no CUDA")])]
