"""The numeric precision every evaluation forward pass runs in (``eval.precision``).

Training may run under bf16 autocast (``train.precision``); evaluation must not inherit it by
accident, or a strategy's scores would depend on how its model was wrapped rather than on what
it learned. :func:`evaluation_precision` states the precision explicitly around every
evaluation, and :func:`hybridcl.training.loop.train_task` removes Accelerate's autocast wrapper from
``model.forward`` when it ends, so the context below is the only thing that decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from hybridcl.errors import quote

PRECISIONS = ("fp32", "bf16")


@contextmanager
def evaluation_precision(precision: str, device: torch.device | str) -> Iterator[None]:
    """Run the body in ``precision`` on ``device``'s type: ``fp32`` disables any autocast (float32
    weights give float32 logits), ``bf16`` autocasts matrix products to bfloat16."""
    if precision not in PRECISIONS:
        raise ValueError(f"eval.precision = {quote(precision)}: choose one of {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield
