"""Dropout for training on a CPU: ``nn.Dropout``'s distribution, its mask drawn from 32-bit random integers.

Hand-written because torch's CPU dropout is slow: ``nn.Dropout`` draws its mask with ``bernoulli_``,
which took 13.8 ms for 3.1M elements on one core of the benchmark machine (AMD EPYC), where drawing
the same number of 32-bit random integers and comparing them to a threshold took 4.9 ms; in a bf16
training step of the seed's workload (T5's dropout 0.1 and LoRA's dropout 0.1) ``bernoulli_`` was
36% of the step (benchmarks/README.md). :func:`use_cpu_dropout` puts :class:`CpuDropout` in place
of every ``nn.Dropout`` module of a model (the base model's and PEFT's ``lora_dropout``);
functional dropout calls inside a model (T5's dropout over attention probabilities) keep torch's.

The mask keeps an element with probability ``1 - round(p * 2**32) / 2**32`` (``1 - p`` within
2.4e-10; torch's own CPU ``bernoulli_`` compares a 24-bit uniform float) and the kept elements are
scaled by ``1 / (1 - p)``, as ``nn.Dropout`` does. The random integers come from torch's default
generator, so ``torch.manual_seed`` makes training reproducible; the stream differs from
``bernoulli_``'s, so the masks (not their distribution) differ from ``nn.Dropout``'s.
"""

from __future__ import annotations

import torch
from torch import nn

_LANES = 2  # 32-bit lanes per 64-bit random integer


def keep_mask(
    shape: torch.Size | tuple[int, ...], p: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A boolean CPU tensor of ``shape``: True (keep) with probability ``1 - p`` per element, independently.

    ``p`` in [0, 1). Each element compares one uniform 32-bit integer to ``round(p * 2**32)``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability {p}: must be in [0, 1)")
    n = 1
    for size in shape:
        n *= size
    # One 64-bit draw over the full int64 range gives two independent uniform 32-bit lanes: half the
    # generator calls of drawing int32 values one at a time (4.9 ms against 6.7 ms for 3.1M elements).
    draws = torch.empty((n + _LANES - 1) // _LANES, dtype=torch.int64).random_(-(2**63), None, generator=generator)
    lanes = draws.view(torch.int32)[:n]
    dropped = round(p * 2**32)  # lanes below -2**31 + dropped are dropped
    if dropped >= 2**32:  # p within 2**-33 of 1
        return torch.zeros(shape, dtype=torch.bool)
    return (lanes >= dropped - 2**31).view(shape)


class CpuDropout(nn.Dropout):
    """``nn.Dropout`` whose mask comes from :func:`keep_mask` on a CPU (see the module's docstring).

    Identity in eval mode; on another device, or in place, or with ``p = 1``, it is ``nn.Dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.inplace or self.p >= 1.0:
            return super().forward(x)
        # autograd keeps the boolean mask (1 byte per element) for the backward pass, as torch's dropout does
        return x.mul(keep_mask(x.shape, self.p)).mul_(1.0 / (1.0 - self.p))


def use_cpu_dropout(model: nn.Module) -> int:
    """Replace every ``nn.Dropout`` module of ``model`` (exactly that class) by a :class:`CpuDropout`
    with the same probability and mode; returns how many were replaced. Parameters and
    ``state_dict`` are unchanged (dropout has neither); calling it again replaces none.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                fast = CpuDropout(child.p, child.inplace)
                fast.train(child.training)
                setattr(parent, name, fast)  # ModuleDict / ModuleList children are attributes too
                replaced += 1
    return replaced
