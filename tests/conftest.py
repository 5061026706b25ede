"""Shared test set-up: offline, deterministic, small thread pools."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# One thread: runs that share the 2 cores with a subprocess (the SIGKILL and multi-process tests)
# otherwise spin-wait in OpenMP and slow down 10-100x.
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
