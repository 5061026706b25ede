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
        "test_multiprocess",
        "test_reliability",
        "test_report",
        "test_seed_preset",
        "test_sweep",
    }
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in WHOLE_RUN_MODULES:
            item.add_marker(pytest.mark.slow)
