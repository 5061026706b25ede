import time

import pytest
import torch

from hybridcl.evaluate.efficiency import Meter, count_parameters, parameter_storage, throughput, trainable_parameters


def test_parameter_counts():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2, bias=False))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 4 * 3 + 3 + 3 * 2
    assert trainable_parameters(model) == 6
    tied = torch.nn.Linear(2, 2)
    shared = torch.nn.ModuleList([tied, tied])
    assert count_parameters(shared) == 6  # a shared tensor counts once


def test_parameter_storage_and_throughput():
    s = parameter_storage([100, 100, 100], shared=50, base=1000)
    assert s == {"per_task_mean": 100.0, "shared": 50, "added_total": 350, "total_with_base": 1350,
                 "added_percent_of_base": 35.0}
    assert throughput(2.0, samples=10, tokens=300) == {"samples_per_s": 5.0, "tokens_per_s": 150.0}
    assert throughput(0.0, samples=1) == {"samples_per_s": None, "tokens_per_s": None}


def test_meter_cpu():
    with Meter("cpu") as m:
        time.sleep(0.05)
        m.add(samples=4, tokens=40)
    assert 0.05 <= m.seconds < 1.0
    assert m.device == torch.device("cpu")
    assert 0.01 < m.peak_memory_gb < 64  # this process's peak RSS, GB
    assert m.samples_per_s == pytest.approx(4 / m.seconds)
    assert m.as_dict()["tokens"] == 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_meter_cuda():
    with Meter("cuda") as m:
        x = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
        del x
    assert m.peak_memory_gb >= 0.268
