"""What trains, what is saved and how much there is: free functions over a :class:`ComponentSet`.

A parameter is told apart by its name alone: :func:`is_lora_param` (a PEFT LoRA weight, by PEFT's
own list of LoRA layer names) and :func:`is_block_param` (a weight of an extra full layer, inside
the slot). :class:`~hybridcl.model.components.ComponentSet` creates and routes the components;
these functions decide trainability, build and load the saved state, and count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn

from hybridcl.errors import ModelError
from hybridcl.model.full_layer import SLOT_ATTR, FullLayerSlot
from hybridcl.strategies import Strategy


class ComponentSet(Protocol):
    """What these functions read of a :class:`hybridcl.model.components.ComponentSet` (a protocol, so
    that the two modules do not import each other)."""

    base: nn.Module
    model: nn.Module
    strategy: Strategy
    slot: FullLayerSlot | None


_LORA_NAMES = frozenset(LoraLayer.adapter_layer_names)  # lora_A, lora_B, lora_embedding_A/B, DoRA's magnitude


def is_lora_param(name: str) -> bool:
    """Whether the parameter called ``name`` (as ``named_parameters`` gives it) is a LoRA weight."""
    return any(part in _LORA_NAMES for part in name.split("."))


def is_block_param(name: str) -> bool:
    """Whether the parameter called ``name`` lives in an extra full layer (the slot's blocks)."""
    return f".{SLOT_ATTR}." in f".{name}"


def _of_adapter(name: str, adapter: str | None) -> bool:
    return adapter is not None and f".{adapter}." in name


@dataclass
class ParamCounts:
    """Parameter counts of a model with its components (numbers of scalars)."""

    base: int
    lora_per_adapter: int
    full_layer_per_block: int
    n_adapters: int
    n_blocks: int
    trainable: int  # trainable while training the active task

    @property
    def stored_total(self) -> int:
        return self.lora_per_adapter * self.n_adapters + self.full_layer_per_block * self.n_blocks


def set_trainable(components: ComponentSet, task: str) -> None:
    """Freeze everything, then unfreeze what ``task`` trains: its adapter, its block (without earlier
    tasks' LoRA inside a shared block) and the base if the strategy trains it."""
    # PEFT marks trainability on its own calls; hybridcl decides it here, in one place.
    strategy = components.strategy
    components.model.requires_grad_(False)
    if strategy.train_base:
        components.base.requires_grad_(True)
    adapter = strategy.lora.key(task) if strategy.lora.used else None
    if isinstance(components.model, PeftModel):
        for name, p in components.model.named_parameters():
            if is_lora_param(name) and _of_adapter(name, adapter):
                p.requires_grad_(True)
    if components.slot is not None:
        for name, p in components.slot.full_layers[strategy.full_layer.key(task)].named_parameters():
            # a shared block can hold earlier tasks' LoRA (components.lora.on_full_layer): those stay frozen
            p.requires_grad_(not is_lora_param(name) or _of_adapter(name, adapter))


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model`` that train now."""
    return [p for p in model.parameters() if p.requires_grad]


def component_state(components: ComponentSet) -> dict[str, torch.Tensor]:
    """Every component's weights (all adapters, all blocks; the base too if the strategy trains it)."""
    keep_all = components.strategy.train_base
    return {
        name: p.detach().cpu().contiguous()
        for name, p in components.model.named_parameters()
        if keep_all or is_lora_param(name) or is_block_param(name)
    }


def load_component_state(components: ComponentSet, state: dict[str, torch.Tensor]) -> None:
    """Load weights saved by :func:`component_state` (after activating the same tasks in order)."""
    expected = set(component_state(components))
    if set(state) != expected:
        diff = sorted(set(state) ^ expected)
        raise ModelError(f"saved components do not match this run's parts (first differences: {diff[:3]})")
    params = dict(components.model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def count_parameters(components: ComponentSet) -> ParamCounts:
    """The base's, each adapter's and each block's parameters, and what trains now."""
    named = list(components.model.named_parameters())
    base = sum(p.numel() for n, p in named if not is_lora_param(n) and not is_block_param(n))
    lora_total = sum(p.numel() for n, p in named if is_lora_param(n))
    model, slot = components.model, components.slot
    n_adapters = len(model.peft_config) if isinstance(model, PeftModel) else 0
    n_blocks = len(slot.full_layers) if slot is not None else 0
    # LoRA inside a block (components.lora.on_full_layer) counts as LoRA, not as the block
    block_total = (
        sum(p.numel() for n, p in slot.full_layers.named_parameters() if not is_lora_param(n))
        if slot is not None
        else 0
    )
    return ParamCounts(
        base=base,
        lora_per_adapter=lora_total // n_adapters if n_adapters else 0,
        full_layer_per_block=block_total // n_blocks if n_blocks else 0,
        n_adapters=n_adapters,
        n_blocks=n_blocks,
        trainable=sum(p.numel() for p in trainable_parameters(model)),
    )
