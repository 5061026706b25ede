import time

import pytest
import torch

from hybridcl.evaluation.efficiency import Meter


def test_meter_cpu():
    with Meter("cpu") as m:
        time.sleep(0.05)
    assert 0.05 <= m.seconds < 1.0
    assert m.device == torch.device("cpu")
    assert 0.01 < m.peak_memory_gb < 64  # this process's peak RSS, GB


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_meter_cuda():
    with Meter("cuda") as m:
        x = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
        del x
    assert m.peak_memory_gb >= 0.268
