"""CPU dropout (hybridcl.model.dropout): nn.Dropout's distribution from random integers, installed for CPU training."""

import math

import pytest
import torch
from accelerate.state import AcceleratorState
from torch import nn

from hybridcl.config.experiment import ComponentsConfig, LoraSpec, ModelConfig, TrainConfig, load_config
from hybridcl.data.batching import encode
from hybridcl.data.tasks import load_task_data
from hybridcl.model.components import ComponentSet
from hybridcl.model.dropout import CpuDropout, keep_mask, use_cpu_dropout
from hybridcl.model.loading import load_base
from hybridcl.model.parameters import component_state
from hybridcl.strategies import get_strategy
from hybridcl.training.loop import make_accelerator, train_task

N = 4_000_000


def test_the_mask_keeps_one_minus_p_within_binomial_tolerance_and_its_two_lanes_are_independent():
    torch.manual_seed(0)
    mask = keep_mask((2000, 2000), 0.1)
    assert mask.dtype == torch.bool and mask.shape == (2000, 2000)
    kept = int(mask.sum())
    assert kept == 3_599_861  # seed 0
    assert abs(kept - 0.9 * N) < 4 * math.sqrt(N * 0.1 * 0.9)  # 600 is one standard deviation
    # the two 32-bit lanes of one 64-bit draw sit side by side: both kept with probability 0.9**2
    both = int(mask.view(-1, 2).all(1).sum())
    assert both == 1_619_651
    assert abs(both - 0.81 * N / 2) < 4 * math.sqrt(N / 2 * 0.81 * 0.19)


def test_the_mask_at_the_ends_of_p():
    assert keep_mask((3,), 0.0).all()
    assert not keep_mask((2, 3), 1 - 2**-40).any()
    with pytest.raises(ValueError, match=r"dropout probability 1.0: must be in \[0, 1\)"):
        keep_mask((3,), 1.0)


def test_dropout_scales_the_kept_elements_so_that_the_mean_is_unchanged_and_the_gradient_follows_the_mask():
    torch.manual_seed(0)
    x = torch.full((N,), 3.0, requires_grad=True)
    out = CpuDropout(0.1).train()(x)
    scale = torch.tensor(3.0) / 0.9
    assert set(out.unique().tolist()) == {0.0, scale.item()}
    assert int((out != 0).sum()) == 3_599_861  # the mask of the test above: same seed, same draws
    assert out.mean().item() == pytest.approx(3.0, abs=4 * 3.0 / 0.9 * math.sqrt(0.1 * 0.9 / N))
    out.sum().backward()
    assert torch.equal(x.grad, (out != 0).float() / 0.9)


def test_dropout_is_the_identity_in_eval_mode_and_nn_dropout_on_another_path():
    x = torch.randn(4, 5)
    assert CpuDropout(0.1).eval()(x) is x
    assert CpuDropout(0.0).train()(x) is x
    torch.manual_seed(3)
    expected = nn.Dropout(0.3, inplace=True).train()(x.clone())
    torch.manual_seed(3)
    assert torch.equal(CpuDropout(0.3, inplace=True).train()(x.clone()), expected)  # in place: torch's


def test_use_cpu_dropout_replaces_the_base_and_lora_dropouts_once_and_keeps_the_state_dict():
    base = load_base(ModelConfig(name="tiny:t5"))
    components = ComponentSet(
        base.model,
        base.kind,
        get_strategy("hybrid_shared_layer"),
        ComponentsConfig(lora=LoraSpec(r=2, alpha=4, dropout=0.2)),
    )
    components.activate("python")
    model = components.model
    keys = list(model.state_dict())
    torch_dropouts = [(n, m.p) for n, m in model.named_modules() if type(m) is nn.Dropout]
    lora = [n for n, _ in torch_dropouts if "lora_dropout" in n]
    # tiny:t5 (2+2 blocks): one per stack (used before the first block and after the last), 3 per
    # encoder block, 4 per decoder block, 3 in the extra block; LoRA on q and v of the base's 6
    # attention modules (hybrid_shared_layer trains the extra block whole)
    assert (len(torch_dropouts), len(lora)) == (31, 12)
    assert use_cpu_dropout(model) == 31
    assert [(n, m.p) for n, m in model.named_modules() if type(m) is CpuDropout] == torch_dropouts
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert list(model.state_dict()) == keys
    assert use_cpu_dropout(model) == 0


def _train(seed: int):
    config = load_config(overrides=["preset=smoke", "model.name=tiny:t5", "data.max_train=16"])
    base = load_base(config.model)
    components = ComponentSet(
        base.model, base.kind, get_strategy("lora_only"), ComponentsConfig(lora=LoraSpec(r=2, alpha=4, dropout=0.1))
    )
    torch.manual_seed(0)
    components.activate("python")
    encoded = encode(
        load_task_data(config.data, "python").train,
        base.tokenizer,
        base.kind,
        64,
        64,
        progress=False,
        long_targets="cut",
    )
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, precision="fp32")
    AcceleratorState._reset_state(reset_partial_state=True)
    train_task(
        components.model,
        encoded,
        cfg,
        accelerator=make_accelerator(cfg, "cpu"),
        kind=base.kind,
        pad_token_id=0,
        seed=seed,
        task="python",
        progress=False,
    )
    return components.model, component_state(components)


def test_cpu_training_uses_cpu_dropout_and_the_same_seed_trains_bit_identical_weights():
    model, first = _train(seed=0)
    assert sum(type(m) is CpuDropout for m in model.modules()) == 28  # tiny:t5's 16 and LoRA's 12
    assert not any(type(m) is nn.Dropout for m in model.modules())
    _, again = _train(seed=0)
    _, other = _train(seed=1)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
