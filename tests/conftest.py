"""Shared test set-up: offline, deterministic, small thread pools."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)
