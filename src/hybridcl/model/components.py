"""The trainable components of a run and their scopes.

:class:`ComponentSet` owns every component a strategy adds to the frozen base: LoRA adapters (PEFT
named adapters: one per task, or one called ``shared``) and full layers (blocks in a
:class:`~hybridcl.model.full_layer.FullLayerSlot`). ``activate(task)`` creates the task's new parts,
freezes everything else (:func:`hybridcl.model.parameters.set_trainable`) and routes the forward pass
through the task's parts; ``route(task)`` only routes (for evaluation). Saving, loading and counting
the components' parameters are free functions in :mod:`hybridcl.model.parameters`.

Under the ``stacked`` LoRA scope (O-LoRA) every adapter created so far is active whatever the
task: one model serves every task, and later adapters can interfere with earlier tasks.

Routing a task that has no per-task parts yet (a task not trained so far, evaluated for forward
transfer) uses the parts of the most recently trained task: what a user would get by running the
model as it stands on a new language.
"""

from __future__ import annotations

import contextlib
import re

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from hybridcl.config.experiment import ComponentsConfig
from hybridcl.constants import Kind
from hybridcl.errors import ModelError
from hybridcl.model.full_layer import SLOT_ATTR, FullLayerSlot, attach_slot, family_of, resolve_position
from hybridcl.model.parameters import set_trainable
from hybridcl.strategies import Strategy


class ComponentSet:
    """The components a strategy adds to a frozen base model, and their routing."""

    def __init__(self, model: nn.Module, kind: Kind, strategy: Strategy, cfg: ComponentsConfig):
        self.base = model
        self.kind = kind
        self.strategy = strategy
        self.cfg = cfg
        self.model: nn.Module = model  # becomes a PeftModel once the first adapter exists
        self.tasks: list[str] = []  # stages activated so far, in order (a task, or `joint`)
        self.active: str | None = None
        position = cfg.full_layer.position
        self.slot: FullLayerSlot | None = attach_slot(model, position) if strategy.full_layer.used else None
        if self.slot is not None:
            placement = self.slot.placement
            self._template = family_of(model).stacks(model)[placement.stack][placement.after - 1]  # copy_last's source
        elif position != "auto" and _family_or_none(model) is not None:
            resolve_position(model, position)  # a place the model lacks is an error whatever the strategy

    # -- creation and routing --------------------------------------------------------------

    def activate(self, task: str) -> None:
        """Create ``task``'s new parts, freeze all other parts and route through ``task``'s parts."""
        if task not in self.tasks:
            self.tasks.append(task)
        if self.slot is not None:
            key = self.strategy.full_layer.key(task)
            if key not in self.slot.full_layers:
                self.slot.add(
                    key,
                    self.cfg.full_layer.init,
                    self._template,
                    family_of(self.base).output_projections,
                    scale=self.cfg.full_layer.init_scale,
                )
        if self.strategy.lora.used:
            name = self.strategy.lora.key(task)
            if not isinstance(self.model, PeftModel) or name not in self.model.peft_config:
                self._add_adapter(name, task)
        self.route(task)
        set_trainable(self, task)

    def route(self, task: str) -> None:
        """Send the forward pass through ``task``'s parts (or the latest task's, if it has none yet)."""
        if not self.tasks:
            raise ModelError("no task has been activated yet: call activate(task) first")
        if isinstance(self.model, PeftModel):
            # PEFT's set_adapter also marks the routed adapters trainable; routing must not change what
            # trains (nor ParamCounts.trainable), so the flags set by activate() are put back.
            trainable = [p for p in self.model.parameters() if p.requires_grad]
            keys = self.adapter_keys(task)
            if len(keys) == 1:
                self.model.set_adapter(keys[0])
            else:  # several adapters summed (stacked, O-LoRA): only the LoRA model takes a list
                self.model.base_model.set_adapter(keys)
            self.model.requires_grad_(False)
            for p in trainable:
                p.requires_grad_(True)
        if self.slot is not None:
            self.slot.active = self.layer_key(task)
        self.active = task

    def _known(self, task: str) -> str:
        return task if task in self.tasks else self.tasks[-1]

    def adapter_keys(self, task: str) -> list[str]:
        """The LoRA adapters that serve ``task`` (a task not trained yet: the latest task's)."""
        return self.strategy.lora.active_keys(self._known(task), self.tasks)

    def layer_key(self, task: str) -> str:
        """The full layer that serves ``task`` (a task not trained yet: the latest task's)."""
        return self.strategy.full_layer.key(self._known(task))

    @contextlib.contextmanager
    def base_only(self):
        """Within the block, the model computes the base model's outputs (row 0 of the matrix)."""
        slot_active = self.slot.active if self.slot is not None else None
        if self.slot is not None:
            self.slot.active = None
        try:
            if isinstance(self.model, PeftModel):
                with self.model.disable_adapter():
                    yield
            else:
                yield
        finally:
            if self.slot is not None:
                self.slot.active = slot_active

    def _add_adapter(self, name: str, task: str) -> None:
        lora = self.cfg.lora
        family = _family_or_none(self.base)
        targets = lora.target_modules or list(family.lora_targets if family else ("q_proj", "v_proj"))
        if self.slot is None:
            exclude = None
        elif lora.on_full_layer:  # the adapter also covers the block that serves its task, no other block
            exclude = rf".*\.{SLOT_ATTR}\.(?!{re.escape(self.layer_key(task))}\.).*"
        else:  # LoRA adapts the base only: the extra blocks are trained whole
            exclude = rf".*\.{SLOT_ATTR}\..*"
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
            exclude_modules=exclude,
            fan_in_fan_out=family is not None and family.name == "gpt2",  # GPT-2 stores Conv1D weights transposed
            task_type="SEQ_2_SEQ_LM" if self.kind == "seq2seq" else "CAUSAL_LM",
        )
        try:
            if isinstance(self.model, PeftModel):
                self.model.add_adapter(name, config)
            else:
                self.model = get_peft_model(self.base, config, adapter_name=name)
        except ValueError as exc:
            raise ModelError(f"components.lora.target_modules = {targets}: {str(exc).splitlines()[0]}") from exc


def _family_or_none(model: nn.Module):
    try:
        return family_of(model)
    except ModelError:
        return None
