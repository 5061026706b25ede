"""The component guarantees, on tiny models built in-process: identity at init, isolation under
per-task scopes, interference under a shared scope, and a base model that never changes."""

import pytest
import torch

from hybridcl.config.experiment import ComponentsConfig, FullLayerSpec, LoraSpec, ModelConfig
from hybridcl.errors import ConfigError
from hybridcl.model.components import ComponentSet
from hybridcl.model.full_layer import family_of
from hybridcl.model.loading import load_base
from hybridcl.model.parameters import component_state, count_parameters, load_component_state, trainable_parameters
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
    params = trainable_parameters(components.model)
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
@pytest.mark.parametrize(
    "strategy, isolated",
    [
        ("lora_only", True),
        ("full_layer_only", True),
        ("hybrid_task_specific", True),  # per-task scopes
        ("hybrid_shared_layer", False),
        ("replay", False),
        ("ewc", False),  # a shared part
    ],
)
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
    after = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in components.model.state_dict().items()
        if "lora_" not in k and ".full_layers." not in k
    }
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_full_finetune_trains_the_base():
    base, components, _ = setup("tiny:t5", "full_finetune")
    components.activate("python")
    assert count_parameters(components).trainable == sum(p.numel() for p in base.model.parameters())


def test_trainable_parameters_are_only_the_active_tasks_parts():
    base, components, _ = setup("tiny:t5", "hybrid_task_specific")
    components.activate("python")
    components.activate("javascript")
    names = {n for n, p in components.model.named_parameters() if p.requires_grad}
    assert names and all(".javascript." in n for n in names)
    c = count_parameters(components)
    assert (c.n_adapters, c.n_blocks) == (2, 2)
    assert c.trainable == c.lora_per_adapter + c.full_layer_per_block
    assert c.stored_total == 2 * (c.lora_per_adapter + c.full_layer_per_block)


def test_copy_last_init_copies_the_last_block():
    base, components, _ = setup(
        "tiny:llama", "full_layer_only", ComponentsConfig(full_layer=FullLayerSpec(init="copy_last"))
    )
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
    state = component_state(components)
    expected = logits(components, base.kind)
    _, fresh, _ = setup("tiny:t5", "hybrid_task_specific")
    for task in ["python", "javascript"]:
        fresh.activate(task)
    load_component_state(fresh, state)
    assert torch.equal(logits(fresh, base.kind), expected)


def test_generation_runs_through_the_components():
    base, components, _ = setup("tiny:llama", "hybrid_task_specific")
    components.activate("python")
    out = components.model.generate(
        input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False, min_new_tokens=4
    )
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
    assert count_parameters(components).trainable == expected
    for task in ("python", "javascript", "go"):
        components.route(task)
        assert {n for n, p in components.model.named_parameters() if p.requires_grad} == before
        assert count_parameters(components).trainable == expected


def test_new_block_gets_the_base_models_own_init():
    # codet5-small's attention shape (d_model 512, d_kv 64, 8 heads), one layer, a small vocabulary.
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=64,
        d_model=512,
        d_kv=64,
        d_ff=2048,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=8,
        feed_forward_proj="relu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    components = ComponentSet(model, "seq2seq", STRATEGIES["full_layer_only"], CFG)
    components.activate("python")
    block = components.slot.full_layers["python"]
    attention, ff = block.layer[0].SelfAttention, block.layer[1].DenseReluDense
    # T5's _init_weights: q ~ N(0, (d_model d_kv)^-1/2) = 0.00552; k, v, wi ~ N(0, d_model^-1/2) = 0.0442.
    # PyTorch's default Linear init would give q and k std 1/sqrt(3 * 512) = 0.0255.
    assert attention.q.weight.std().item() == pytest.approx((512 * 64) ** -0.5, rel=0.02)
    assert attention.k.weight.std().item() == pytest.approx(512**-0.5, rel=0.02)
    assert ff.wi.weight.std().item() == pytest.approx(512**-0.5, rel=0.02)
    assert torch.all(attention.o.weight == 0) and torch.all(ff.wo.weight == 0)  # init="zero" still zeroes them


def test_new_llama_block_gets_the_initializer_range():
    base, components, _ = setup("tiny:llama", "full_layer_only")
    components.activate("python")
    block = components.slot.full_layers["python"]
    # LlamaConfig.initializer_range = 0.02; PyTorch's default for a 64-wide Linear is 1/sqrt(3 * 64) = 0.072
    assert block.self_attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(block.self_attn.o_proj.weight == 0) and torch.all(block.mlp.down_proj.weight == 0)


# -- components.full_layer.position ----------------------------------------------------------------

# Every place each tiny model has (2 blocks per stack): the default, each stack's last block and
# a block inside each stack.
POSITIONS = (
    [("tiny:t5", p) for p in ("auto", "encoder", "encoder:1", "encoder:2", "decoder", "decoder:1", "decoder:2")]
    + [("tiny:llama", p) for p in ("auto", "decoder", "decoder:1", "decoder:2")]
    + [("tiny:gpt2", "decoder:1")]
)


def at(position, init="zero"):
    return ComponentsConfig(lora=CFG.lora, full_layer=FullLayerSpec(init=init, position=position))


def generate(components, ids, max_new_tokens=5):
    return components.model.generate(
        input_ids=ids, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False
    )


@pytest.mark.parametrize("arch, position", POSITIONS)
@pytest.mark.parametrize("strategy", ["full_layer_only", "hybrid_shared_layer"])
def test_every_position_is_the_base_model_at_init_and_sits_where_it_says(arch, position, strategy):
    base, components, reference = setup(arch, strategy, at(position))
    ids = torch.tensor([[5, 6, 7, 8]])
    expected_generation = base.model.generate(input_ids=ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    components.activate("python")
    placement = components.slot.placement
    default_stack = "encoder" if base.kind == "seq2seq" else "decoder"
    stack, _, k = position.replace("auto", default_stack).partition(":")
    assert (placement.stack, placement.after, placement.size) == (stack, int(k or 2), 2)
    blocks = family_of(base.model).stacks(base.model)[stack]
    assert len(blocks) == 3 and blocks[placement.after] is components.slot
    assert torch.equal(logits(components, base.kind), reference)  # bit-identical
    # generation runs through the KV cache, which must have an entry for the block wherever it sits
    assert torch.equal(generate(components, ids), expected_generation)


@pytest.mark.parametrize("arch, position", POSITIONS)
def test_every_position_trains(arch, position):
    base, components, reference = setup(arch, "full_layer_only", at(position))
    components.activate("python")
    block = components.slot.full_layers["python"]
    before = {n: p.detach().clone() for n, p in block.named_parameters()}
    assert set(before) == {n for n, p in block.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(trainable_parameters(components.model), lr=1e-2)
    components.model.train()
    losses = []
    for _ in range(4):  # one batch, four steps: the loss on it falls
        loss = components.model(**batch(base.kind)).loss
        loss.backward()
        if not losses:  # the zeroed output projections get a gradient first; they open the rest
            grads = {n for n, p in block.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
            assert grads >= {n for n in before if n.split(".")[-2] in family_of(base.model).output_projections}
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    changed = {n for n, p in block.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(before)  # every parameter of the block trained
    assert not torch.equal(logits(components, base.kind), reference)
    with components.base_only():
        assert torch.equal(logits(components, base.kind), reference)


@pytest.mark.parametrize(
    "arch, position", [("tiny:t5", "decoder:1"), ("tiny:t5", "encoder:1"), ("tiny:llama", "decoder:1")]
)
@pytest.mark.parametrize("strategy, isolated", [("hybrid_task_specific", True), ("hybrid_shared_layer", False)])
def test_scopes_hold_at_every_position(arch, position, strategy, isolated):
    base, components, _ = setup(arch, strategy, at(position))
    components.activate("python")
    train_steps(components, base.kind, seed=1)
    after_python = logits(components, base.kind)
    state = {k: v.clone() for k, v in component_state(components).items()}  # on a CPU, detach() shares storage
    components.activate("javascript")
    assert len(components.slot.full_layers) == (2 if isolated else 1)
    train_steps(components, base.kind, seed=2)
    components.route("python")
    assert torch.equal(logits(components, base.kind), after_python) == isolated
    # saved weights carry the place: a fresh model with the same position loads them back exactly
    stack = position.partition(":")[0]
    assert all(
        f"{stack}.block.1.full_layers." in k or "layers.1.full_layers." in k for k in state if ".full_layers." in k
    )
    _, fresh, _ = setup(arch, strategy, at(position))
    fresh.activate("python")
    load_component_state(fresh, state)
    assert torch.equal(logits(fresh, base.kind), after_python)


def test_copy_last_copies_the_block_the_new_one_follows():
    base, components, _ = setup("tiny:t5", "full_layer_only", at("decoder:1", init="copy_last"))
    components.activate("python")
    first = base.model.decoder.block[0].state_dict()
    new = components.slot.full_layers["python"].state_dict()
    # decoder block 1 of 2 carries the relative-position table the others reuse; the copy has none
    assert set(first) - set(new) == {"layer.0.SelfAttention.relative_attention_bias.weight"}
    assert all(torch.equal(first[k], new[k]) for k in new)


@pytest.mark.parametrize(
    "arch, position, message",
    [
        (
            "tiny:llama",
            "encoder",
            "components.full_layer.position = 'encoder': llama is a causal model with a decoder "
            "only: choose one of auto, decoder, decoder:K (K from 1 to 2)",
        ),
        (
            "tiny:t5",
            "encoder:3",
            "components.full_layer.position = 'encoder:3': the encoder of t5 has 2 blocks: choose "
            "one of auto, encoder, encoder:K (K from 1 to 2), decoder, decoder:K (K from 1 to 2)",
        ),
        (
            "tiny:gpt2",
            "decoder:7",
            "the decoder of gpt2 has 2 blocks: choose one of auto, decoder, decoder:K (K from 1 to 2)",
        ),
    ],
)
@pytest.mark.parametrize("strategy", ["hybrid_task_specific", "lora_only"])
def test_a_place_the_model_lacks_is_a_config_error_naming_the_stacks_size(arch, position, message, strategy):
    with pytest.raises(ConfigError) as info:
        setup(arch, strategy, at(position))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_block_inside_a_stack_of_mixed_attention_types_is_refused():
    base = load_base(ModelConfig(name="tiny:llama"))
    base.model.config.layer_types = ["sliding_attention", "full_attention"]
    with pytest.raises(ConfigError, match="mixes attention types .* use components.full_layer.position=decoder"):
        ComponentSet(base.model, base.kind, STRATEGIES["full_layer_only"], at("decoder:1"))
    components = ComponentSet(base.model, base.kind, STRATEGIES["full_layer_only"], at("decoder"))
    assert base.model.config.layer_types == ["sliding_attention", "full_attention", "full_attention"]
    assert components.slot.placement.after == 2


def test_is_lora_param_knows_peft_names_and_nothing_else():
    from hybridcl.model.parameters import is_block_param, is_lora_param

    assert is_lora_param("base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.python.weight")
    assert is_lora_param("base_model.model.model.embed_tokens.lora_embedding_B.shared")
    assert not is_lora_param("base_model.model.encoder.block.0.layer.0.SelfAttention.q.base_layer.weight")
    assert not is_lora_param("model.layers.0.mlp.flora_proj.weight")  # a name that merely contains "lora_"
    assert is_block_param("encoder.slot.full_layers.python.layer.0.SelfAttention.q.weight")
    assert not is_block_param("encoder.block.0.layer.0.SelfAttention.q.weight")
