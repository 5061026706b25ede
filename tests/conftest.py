"""Shared test set-up: offline, deterministic, small thread pools."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# One thread: runs that share the 2 cores with a subprocess (the SIGKILL and multi-process tests)
# otherwise spin-wait in OpenMP and slow down 10-100x.
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def codet5_small_dir(tmp_path_factory):
    """A local folder laid out like the hub's Salesforce/codet5-small (tests/_seed_fixtures.py)."""
    from _seed_fixtures import build_codet5_small

    return build_codet5_small(tmp_path_factory.mktemp("codet5-small"))


@pytest.fixture(scope="session")
def codesearchnet_dir(tmp_path_factory):
    """A CodeSearchNet-release-layout folder (python, javascript) built from the bundled corpus."""
    from _seed_fixtures import build_codesearchnet

    return build_codesearchnet(tmp_path_factory.mktemp("codesearchnet"))


@pytest.fixture(scope="session")
def hf_code_search_net_dir(tmp_path_factory):
    """The same records as ``codesearchnet_dir``, as the HF code_search_net dataset saved to json lines."""
    from _seed_fixtures import build_hf_code_search_net

    return build_hf_code_search_net(tmp_path_factory.mktemp("hf-code-search-net"))


@pytest.fixture(scope="session")
def codet5_tiny_dir(tmp_path_factory):
    """``codet5_small_dir`` with a 2+2-block, d_model 64 model: same files, tokenizer and behaviour, fast."""
    from _seed_fixtures import TINY, build_codet5_small

    return build_codet5_small(tmp_path_factory.mktemp("codet5-tiny"), **TINY)


@pytest.fixture
def malicious_pickle_model(tmp_path):
    """``(folder, marker)``: a tiny T5 folder whose only weights are a pickle that, when unpickled,
    creates ``marker`` (code execution made visible)."""
    import pickle

    from transformers import ByT5Tokenizer

    from hybridcl.model.loading import TINY_CONFIGS

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = tmp_path / "model"
    TINY_CONFIGS["t5"]().save_pretrained(folder)
    ByT5Tokenizer().save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    return folder, marker


# Modules whose tests are whole runs (training and evaluation of a tiny model, the real CLI in a
# subprocess, or a module fixture that runs an experiment): each takes seconds to a minute. They are
# marked `slow`, so that `pytest -m "not slow"` (make test-fast) runs the unit tests alone; CI and
# `make test` run everything. A new whole-run test goes in one of these modules or gets the mark.
WHOLE_RUN_MODULES = frozenset(
    {
        "test_cli_errors",
        "test_continual",
        "test_embedded",
        "test_export",
        "test_learn",
        "test_multiprocess",
        "test_reliability",
        "test_report",
        "test_seed_preset",
        "test_serve",
        "test_sweep",
    }
)

# Tests elsewhere that train, build the corpus or fuzz for more than about 4 s each (measured with
# `pytest -m "not slow" --durations=40` on 2 shared cores).
SLOW_TESTS = frozenset(
    {
        "test_a_shared_block_keeps_the_earlier_tasks_lora_frozen",
        "test_auto_routing_matches_the_runs_routing",
        "test_bf16_training_leaves_an_unwrapped_forward_and_fp32_evaluation_is_exact",
        "test_build_reproduces_shipped_corpus",
        "test_bundled_corpus_matches_manifest",
        "test_constant_learning_rate_unshuffled_order_and_unmasked_loss",
        "test_cpu_bf16_training_attends_with_matrix_products_and_restores_sdpa",
        "test_cpu_training_uses_cpu_dropout_and_the_same_seed_trains_bit_identical_weights",
        "test_each_adapter_covers_its_own_block_only",
        "test_every_task_trained_in_one_process_runs_under_bf16_autocast",
        "test_fuzz_read_records_returns_or_raises_data_error",
        "test_generate_command_and_its_errors",
        "test_load_run_reproduces_the_runs_predictions",
        "test_overrides_give_a_config_or_config_error",
        "test_params_cli_prints_the_seeds_numbers",
        "test_params_table_shows_the_seed_numbers",
        "test_preset_seed_original_runs_end_to_end",
        "test_reading_the_loss_every_50_steps_as_on_a_gpu_logs_the_same_lines",
        "test_reading_the_loss_every_50_steps_still_names_the_step_that_diverged",
        "test_routing_scores_the_bare_source_and_regenerates_with_the_chosen_template",
        "test_seed_original_runs_on_a_causal_model",
        "test_strategy_counts_after_two_tasks",
        "test_the_embedded_models_block_goes_after_any_decoder_layer",
        "test_the_fast_path_follows_the_plain_path_within_0_2_percent",
        "test_the_position_is_named_and_a_decoder_block_counted_with_its_cross_attention",
        "test_yaml_documents_give_a_config_or_config_error",
    }
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in WHOLE_RUN_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
