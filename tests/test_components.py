"""The component guarantees, on tiny models built in-process: identity at init, isolation under
per-task scopes, interference under a shared scope, and a base model that never changes."""
import pytest
import torch

from hybridcl.config import ComponentsConfig, FullLayerSpec, LoraSpec, ModelConfig
from hybridcl.model.components import ComponentSet
from hybridcl.model.loading import load_base
from hybridcl.strategies import SEED_STRATEGIES, STRATEGIES

ARCHS = ["tiny:t5", "tiny:llama", "tiny:gpt2"]
CFG = ComponentsConfig(lora=LoraSpec(r=4, alpha=8, dropout=0.0))


def batch(kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, 380, (4, 10), generator=g)
    y = torch.randint(3, 380, (4, 7), generator=g)
    return {"input_ids": x, "labels": y} if kind == "seq2seq" else {"input_ids": x, "labels": x}


def logits(components, kind):
    components.model.eval()
    with torch.no_grad():
        return components.model(**batch(kind)).logits


def train_steps(components, kind, seed, steps=3):
    params = components.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=1e-2)
    components.model.train()
    for step in range(steps):
        loss = components.model(**batch(kind, seed=100 * seed + step)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()


def setup(arch, strategy, cfg=CFG):
    base = load_base(ModelConfig(name=arch))
    with torch.no_grad():
        reference = base.model(**batch(base.kind)).logits
    return base, ComponentSet(base.model, base.kind, STRATEGIES[strategy], cfg), reference


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("strategy", SEED_STRATEGIES)
def test_fresh_components_leave_outputs_unchanged(arch, strategy):
    base, components, reference = setup(arch, strategy)
    components.activate("python")
    assert torch.equal(logits(components, base.kind), reference)


@pytest.mark.parametrize("arch", ARCHS)
def test_base_only_gives_base_outputs_after_training(arch):
    base, components, reference = setup(arch, "hybrid_task_specific")
    components.activate("python")
    train_steps(components, base.kind, seed=1)
    assert not torch.equal(logits(components, base.kind), reference)
    with components.base_only():
        assert torch.equal(logits(components, base.kind), reference)
    assert not torch.equal(logits(components, base.kind), reference)  # routing is restored


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("strategy, isolated", [
    ("lora_only", True), ("full_layer_only", True), ("hybrid_task_specific", True),  # per-task scopes
    ("hybrid_shared_layer", False), ("replay", False), ("ewc", False),  # a shared part
])
def test_only_shared_parts_let_a_later_task_change_an_earlier_tasks_outputs(arch, strategy, isolated):
    base, components, _ = setup(arch, strategy)
    components.activate("python")
    train_steps(components, base.kind, seed=1)
    after_python = logits(components, base.kind)
    components.activate("javascript")
    train_steps(components, base.kind, seed=2)
    assert not torch.equal(logits(components, base.kind), after_python)  # javascript's model differs
    components.route("python")
    assert torch.equal(logits(components, base.kind), after_python) == isolated  # isolated: bit-identical


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if not STRATEGIES[s].train_base])
def test_base_weights_never_change(arch, strategy):
    base, components, _ = setup(arch, strategy)
    before = {k: v.clone() for k, v in base.model.state_dict().items() if "lora_" not in k and ".full_layers." not in k}
    for i, task in enumerate(["python", "javascript"]):
        components.activate(task)
        train_steps(components, base.kind, seed=i)
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in components.model.state_dict().items() if "lora_" not in k and ".full_layers." not in k}
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_full_finetune_trains_the_base():
    base, components, _ = setup("tiny:t5", "full_finetune")
    components.activate("python")
    assert components.counts().trainable == sum(p.numel() for p in base.model.parameters())


def test_trainable_parameters_are_only_the_active_tasks_parts():
    base, components, _ = setup("tiny:t5", "hybrid_task_specific")
    components.activate("python")
    components.activate("javascript")
    names = {n for n, p in components.model.named_parameters() if p.requires_grad}
    assert names and all(".javascript." in n for n in names)
    c = components.counts()
    assert (c.n_adapters, c.n_blocks) == (2, 2)
    assert c.trainable == c.lora_per_adapter + c.full_layer_per_block
    assert c.stored_total == 2 * (c.lora_per_adapter + c.full_layer_per_block)


def test_copy_last_init_copies_the_last_block():
    base, components, _ = setup("tiny:llama", "full_layer_only", ComponentsConfig(full_layer=FullLayerSpec(init="copy_last")))
    components.activate("python")
    last = base.model.model.layers[-2].state_dict()
    new = components.slot.full_layers["python"].state_dict()
    assert set(last) == set(new) and all(torch.equal(last[k], new[k]) for k in last)
    assert base.model.config.num_hidden_layers == 3


def test_component_state_round_trip():
    base, components, _ = setup("tiny:t5", "hybrid_task_specific")
    for i, task in enumerate(["python", "javascript"]):
        components.activate(task)
        train_steps(components, base.kind, seed=i)
    state = components.component_state()
    expected = logits(components, base.kind)
    _, fresh, _ = setup("tiny:t5", "hybrid_task_specific")
    for task in ["python", "javascript"]:
        fresh.activate(task)
    fresh.load_component_state(state)
    assert torch.equal(logits(fresh, base.kind), expected)


def test_generation_runs_through_the_components():
    base, components, _ = setup("tiny:llama", "hybrid_task_specific")
    components.activate("python")
    out = components.model.generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False,
                                    min_new_tokens=4)
    assert out.shape == (1, 7)


@pytest.mark.parametrize("arch", ["tiny:t5", "tiny:llama"])
def test_stacked_lora_keeps_every_adapter_active_and_trains_only_the_newest(arch):
    base, components, reference = setup(arch, "o_lora")
    components.activate("python")
    train_steps(components, base.kind, seed=1)
    after_python = logits(components, base.kind)
    components.activate("javascript")
    names = {n for n, p in components.model.named_parameters() if p.requires_grad}
    assert names and all(".javascript." in n for n in names)
    assert torch.equal(logits(components, base.kind), after_python)  # the new adapter starts at zero
    train_steps(components, base.kind, seed=2)
    components.route("python")
    assert sorted(components.model.base_model.active_adapters) == ["javascript", "python"]
    assert not torch.equal(logits(components, base.kind), after_python)


@pytest.mark.parametrize("strategy", ["o_lora", "hybrid_task_specific"])
def test_routing_does_not_change_what_trains_or_its_count(strategy):
    # o_lora routes through every adapter at once; PEFT's set_adapter marks each routed adapter
    # trainable, which made trainable_last_task 2 x 6,144 on tiny:t5 where 6,144 train.
    base, components, _ = setup("tiny:t5", strategy)
    components.activate("python")
    components.activate("javascript")
    before = {n for n, p in components.model.named_parameters() if p.requires_grad}
    expected = 6144 + (32896 if strategy == "hybrid_task_specific" else 0)  # LoRA r=4 on q, v; one T5 block
    assert components.counts().trainable == expected
    for task in ("python", "javascript", "go"):
        components.route(task)
        assert {n for n, p in components.model.named_parameters() if p.requires_grad} == before
        assert components.counts().trainable == expected


def test_new_block_gets_the_base_models_own_init():
    # codet5-small's attention shape (d_model 512, d_kv 64, 8 heads), one layer, a small vocabulary.
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=64, d_model=512, d_kv=64, d_ff=2048, num_layers=1, num_decoder_layers=1, num_heads=8,
                      feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    components = ComponentSet(model, "seq2seq", STRATEGIES["full_layer_only"], CFG)
    components.activate("python")
    block = components.slot.full_layers["python"]
    attention, ff = block.layer[0].SelfAttention, block.layer[1].DenseReluDense
    # T5's _init_weights: q ~ N(0, (d_model d_kv)^-1/2) = 0.00552; k, v, wi ~ N(0, d_model^-1/2) = 0.0442.
    # PyTorch's default Linear init would give q and k std 1/sqrt(3 * 512) = 0.0255.
    assert attention.q.weight.std().item() == pytest.approx((512 * 64) ** -0.5, rel=0.02)
    assert attention.k.weight.std().item() == pytest.approx(512 ** -0.5, rel=0.02)
    assert ff.wi.weight.std().item() == pytest.approx(512 ** -0.5, rel=0.02)
    assert torch.all(attention.o.weight == 0) and torch.all(ff.wo.weight == 0)  # init="zero" still zeroes them


def test_new_llama_block_gets_the_initializer_range():
    base, components, _ = setup("tiny:llama", "full_layer_only")
    components.activate("python")
    block = components.slot.full_layers["python"]
    # LlamaConfig.initializer_range = 0.02; PyTorch's default for a 64-wide Linear is 1/sqrt(3 * 64) = 0.072
    assert block.self_attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(block.self_attn.o_proj.weight == 0) and torch.all(block.mlp.down_proj.weight == 0)
