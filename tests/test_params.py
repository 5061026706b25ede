"""The seed's architecture numbers on the codet5-small architecture (built from its published
config on the meta device: no download, no weights)."""

from hybridcl.config.experiment import load_config
from hybridcl.model.budget import build_components, lora_count, matched_lora_rank, params_table
from hybridcl.model.parameters import count_parameters


def test_codet5_small_counts_are_exact():
    config = load_config("reference")
    components = build_components(config, "hybrid_task_specific", 1)
    c = count_parameters(components)
    assert c.base == 60_492_288
    assert c.full_layer_per_block == 3_146_752
    assert c.lora_per_adapter == 1_671_168  # q,k,v,o,wi at r=16
    model = components.model
    assert lora_count(model, ("q", "v"), 16) == 589_824
    assert lora_count(model, ("q", "k", "v", "o"), 16) == 1_179_648
    assert lora_count(model, ("q", "k", "v", "o", "wi", "wo"), 16) == 2_162_688
    assert lora_count(model, ("q", "k", "v", "o", "wi"), 16, include_full_layer=True) == 1_777_664


def test_strategy_counts_after_two_tasks():
    config = load_config("reference")
    lora, block = 1_671_168, 3_146_752
    expected = {
        "lora_only": (lora, 2 * lora),
        "full_layer_only": (block, 2 * block),
        "hybrid_task_specific": (lora + block, 2 * (lora + block)),
        "hybrid_shared_layer": (lora + block, 2 * lora + block),
    }
    for name, (trainable, stored) in expected.items():
        c = count_parameters(build_components(config, name, 2))
        assert (c.trainable, c.stored_total) == (trainable, stored), name


def test_params_table_shows_the_seed_numbers():
    table = params_table(load_config("reference"))
    for text in ("60,492,288", "3,146,752", "1,671,168", "1,777,664", "hybrid_shared_layer", "7.96%"):
        assert text in table


def test_the_position_is_named_and_a_decoder_block_counted_with_its_cross_attention():
    # codet5-small, d_model 512, d_ff 2048: an encoder block is self-attention (4 x 512 x 512) + the
    # feed-forward (2 x 512 x 2048) + 2 layer norms (2 x 512) = 3,146,752; a decoder block adds
    # cross-attention (4 x 512 x 512) and its layer norm (512): 4,195,840.
    for position, block, where in [
        ("auto", 3_146_752, "after encoder block 6 of 6, the last (encoder:6)"),
        ("encoder:3", 3_146_752, "after encoder block 3 of 6 (encoder:3)"),
        ("decoder", 4_195_840, "after decoder block 6 of 6, the last (decoder:6)"),
        ("decoder:1", 4_195_840, "after decoder block 1 of 6 (decoder:1)"),
    ]:
        config = load_config("reference", overrides=[f"components.full_layer.position={position}"])
        c = count_parameters(build_components(config, "hybrid_shared_layer", 2))
        assert (c.full_layer_per_block, c.trainable, c.stored_total) == (
            block,
            1_671_168 + block,
            2 * 1_671_168 + block,
        )
        table = params_table(config)
        assert f"full layer at components.full_layer.position={position}: {where}" in table
        assert f"{'full layer (one T5Block)':<60}{block:>14,}" in table


def test_the_embedded_models_block_goes_after_any_decoder_layer():
    config = load_config("default", overrides=["components.full_layer.position=decoder:10"])
    table = params_table(config)
    assert "full layer at components.full_layer.position=decoder:10: after decoder block 10 of 30 (decoder:10)" in table
    assert "full layer (one LlamaDecoderLayer)" in table and "3,540,096" in table


def test_parameter_matched_lora_rank_on_the_default_model():
    # SmolLM2-135M, LoRA r=8 on its default targets: 460,800 = 8 x 57,600; the hybrid: 460,800 + 3,540,096
    config = load_config("default")
    assert count_parameters(build_components(config, "hybrid_task_specific", 1)).trainable == 4_000_896
    # 4,000,896 / 57,600 = 69.46: r=69 gives 3,974,400 (26,496 short), r=70 4,032,000 (31,104 over)
    assert matched_lora_rank(config) == (69, 3_974_400, 4_000_896)
    matched = load_config("default", overrides=["strategy=lora_only", "components.lora.r=69"])
    assert count_parameters(build_components(matched, "lora_only", 1)).trainable == 3_974_400
    assert "parameter-matched LoRA-only: components.lora.r=69 (3,974,400 trainable per task" in params_table(config)
    # codet5-small (the seed preset): 1,671,168 / 16 = 104,448 per rank; 4,817,920 / 104,448 = 46.13
    assert matched_lora_rank(load_config("reference")) == (46, 46 * 104_448, 1_671_168 + 3_146_752)
