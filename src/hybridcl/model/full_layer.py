"""The full layer: one extra transformer block of the base's own block class.

It sits in a block stack as a :class:`FullLayerSlot` that holds one block per task (or one shared
block) and routes the forward pass through the active one. With no active block the slot passes
its input through, so the model is exactly the base model.

Where it sits is ``components.full_layer.position`` (:func:`resolve_position`): by default after
the encoder's last block of a seq2seq model and after the decoder's last block of a causal one;
or after the last block, or the K-th block, of either stack (a causal model has a decoder only).

A new block is initialised with the base model's own ``_init_weights`` (the std T5 or Llama give
their blocks). With ``init="zero"`` its output projections (attention output, cross-attention
output in a T5 decoder block, and MLP output) are then zeroed, so each residual branch adds
exactly 0: the model's outputs are bit-identical to the base's until the block is trained,
wherever it sits. ``init="copy_last"`` copies the weights of the block it follows instead.
``init="scale"`` multiplies every parameter of the base-initialised block by a factor (0.01 in
the seed, layer norms included), which changes the model's outputs before training.

The default placement matches the seed's ``add_trainable_transformer_layer`` (a T5 rebuilt with
``num_layers + 1``): the block follows the encoder's last block, before its final layer norm, and
has no relative-position table of its own, so it reuses the bias block 0 computes (T5Stack passes
it down the stack). That is why a block cannot go before a stack's first block: T5's first block
computes the bias the others reuse.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hybridcl.config.experiment import parse_position
from hybridcl.errors import ConfigError, ModelError, quote

SLOT_ATTR = "full_layers"  # the ModuleDict inside the slot; PEFT's exclude pattern matches it
POSITION_KEY = "components.full_layer.position"


@dataclass(frozen=True)
class Family:
    """How hybridcl finds the block stacks of one model family and builds a block for them."""

    name: str
    # stack name ("encoder", "decoder") -> its blocks; the first is the default stack (position=auto)
    stacks: Callable[[nn.Module], dict[str, nn.ModuleList]]
    new_block: Callable[[nn.Module, str, int], nn.Module]  # (model, stack name, layer index)
    output_projections: tuple[str, ...]  # module names whose weights are zeroed by init="zero"
    lora_targets: tuple[str, ...]  # default LoRA target modules
    layer_count_attr: str | None  # config attribute that a causal stack slices its layers by


@dataclass(frozen=True)
class Placement:
    """Where a slot sits: after the first ``after`` of the ``size`` base blocks of ``stack``."""

    stack: str  # "encoder" or "decoder"
    after: int  # 1 to size
    size: int  # the stack's base blocks, the slot not counted

    @property
    def position(self) -> str:
        """The explicit ``components.full_layer.position`` value of this place (``encoder:6``)."""
        return f"{self.stack}:{self.after}"

    def describe(self) -> str:
        last = ", the last" if self.after == self.size else ""
        return f"after {self.stack} block {self.after} of {self.size}{last}"


def _t5_block(model: nn.Module, stack: str, index: int) -> nn.Module:
    from transformers.models.t5.modeling_t5 import T5Block

    # The stack's own config: a decoder block (is_decoder) has cross-attention, an encoder block none.
    config = (model.get_encoder() if stack == "encoder" else model.get_decoder()).config
    # Only the first block carries the relative position bias; later blocks reuse it.
    return T5Block(config, has_relative_attention_bias=False, layer_idx=index)


def _same_class_block(model: nn.Module, stack: str, index: int) -> nn.Module:
    first = family_of(model).stacks(model)[stack][0]
    return type(first)(model.config, layer_idx=index)


FAMILIES = {
    "t5": Family(
        "t5",
        lambda m: {"encoder": m.get_encoder().block, "decoder": m.get_decoder().block},
        _t5_block,
        ("o", "wo"),
        ("q", "v"),
        None,
    ),
    "llama": Family(
        "llama",
        lambda m: {"decoder": m.model.layers},
        _same_class_block,
        ("o_proj", "down_proj"),
        ("q_proj", "v_proj"),
        "num_hidden_layers",
    ),
    "gpt2": Family(
        "gpt2", lambda m: {"decoder": m.transformer.h}, _same_class_block, ("c_proj",), ("c_attn",), "n_layer"
    ),
}
# Llama-shaped decoders share the "llama" recipe.
_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "granite", "olmo", "smollm3"}


def family_of(model: nn.Module) -> Family:
    model_type = getattr(model.config, "model_type", None)
    if model_type in ("t5", "mt5", "codet5"):
        return FAMILIES["t5"]
    if model_type in _LLAMA_LIKE:
        return FAMILIES["llama"]
    if model_type == "gpt2":
        return FAMILIES["gpt2"]
    raise ModelError(
        f"hybridcl has no full-layer recipe for model_type {quote(model_type)}: supported are t5 (CodeT5), "
        f"gpt2 and Llama-shaped decoders ({', '.join(sorted(_LLAMA_LIKE))}); LoRA-only strategies still work"
    )


class FullLayerSlot(nn.Module):
    """A place in the block stack that holds named blocks and routes through the active one."""

    def __init__(
        self, block_factory: Callable[[], nn.Module], passthrough: Callable[..., object], placement: Placement
    ):
        super().__init__()
        self.full_layers = nn.ModuleDict()
        self.active: str | None = None
        self.placement = placement
        self._factory = block_factory
        self._passthrough = passthrough

    def add(
        self, key: str, init: str, template: nn.Module | None, zero_names: tuple[str, ...], scale: float = 0.01
    ) -> nn.Module:
        """Create the block ``key`` (``init`` = "zero", "copy_last" from ``template``, or "scale":
        every parameter times ``scale``)."""
        if key in self.full_layers:
            raise ModelError(f"full layer {quote(key)} exists already")
        block = self._factory()
        if init == "copy_last":
            if template is None:
                raise ModelError("full_layer.init=copy_last needs a last block to copy")
            # strict=False: the first T5 block's relative-position table has no twin in later blocks.
            missing, _ = block.load_state_dict(copy.deepcopy(template.state_dict()), strict=False)
            if missing:
                raise ModelError(f"full_layer.init=copy_last: the last block lacks {missing[:3]}")
        elif init == "scale":
            with torch.no_grad():
                for p in block.parameters():
                    p.mul_(scale)
        else:
            zeroed = 0
            for name, module in block.named_modules():
                if name.split(".")[-1] in zero_names:
                    for p in module.parameters(recurse=False):
                        nn.init.zeros_(p)
                    zeroed += 1
            if zeroed == 0:
                raise ModelError(f"no output projection named {zero_names} found in {type(block).__name__}")
        ref = next(iter(template.parameters())) if template is not None else None
        if ref is not None:
            block.to(device=ref.device, dtype=ref.dtype)
        self.full_layers[key] = block
        return block

    def forward(self, *args, **kwargs):
        if self.active is None:
            return self._passthrough(*args, **kwargs)
        return self.full_layers[self.active](*args, **kwargs)


def find_slot(model: nn.Module) -> FullLayerSlot | None:
    """The model's :class:`FullLayerSlot`, in whichever stack it sits, or None."""
    for blocks in family_of(model).stacks(model).values():
        for block in blocks:
            if isinstance(block, FullLayerSlot):
                return block
    return None


def resolve_position(model: nn.Module, position: str = "auto") -> Placement:
    """Where ``components.full_layer.position`` puts the block in ``model``; a place the model does
    not have (a stack it lacks, a K beyond the stack's blocks) is a :class:`ConfigError`."""
    family = family_of(model)
    stacks = family.stacks(model)
    stack, after = parse_position(position, POSITION_KEY)
    stack = stack or next(iter(stacks))
    model_type = model.config.model_type
    choices = ", ".join(
        ["auto"] + [f"{name}, {name}:K (K from 1 to {_base_size(blocks)})" for name, blocks in stacks.items()]
    )
    if stack not in stacks:
        raise ConfigError(
            f"{POSITION_KEY} = {quote(position)}: {model_type} is a causal model with a "
            f"{' and '.join(stacks)} only: choose one of {choices}"
        )
    size = _base_size(stacks[stack])
    after = size if after is None else after
    if after > size:
        raise ConfigError(
            f"{POSITION_KEY} = {quote(position)}: the {stack} of {model_type} has {size} blocks: "
            f"choose one of {choices}"
        )
    layer_types = getattr(model.config, "layer_types", None) if family.layer_count_attr else None
    if after < size and isinstance(layer_types, list) and len(set(layer_types)) > 1:
        # The decoder picks each layer's attention mask by its position in the stack but its KV-cache
        # entry by its layer index; a block inside a stack of mixed types would shift one against the other.
        raise ConfigError(
            f"{POSITION_KEY} = {quote(position)}: this {model_type} mixes attention types "
            f"({', '.join(sorted(set(layer_types)))}) across its layers, so the block can only "
            f"go after its last block: use {POSITION_KEY}={stack}"
        )
    return Placement(stack, after, size)


def _base_size(blocks: nn.ModuleList) -> int:
    return sum(1 for block in blocks if not isinstance(block, FullLayerSlot))


def attach_slot(model: nn.Module, position: str = "auto") -> FullLayerSlot:
    """Insert an empty :class:`FullLayerSlot` at ``position`` (once) and return it."""
    existing = find_slot(model)
    if existing is not None:
        if resolve_position(model, position) != existing.placement:
            raise ModelError(f"the model already has a full-layer slot {existing.placement.describe()}")
        return existing
    placement = resolve_position(model, position)
    family = family_of(model)
    blocks = family.stacks(model)[placement.stack]
    template = blocks[placement.after - 1]
    # A layer index no base block has: KV caches key each layer's entry by it, wherever the block sits.
    index = placement.size
    signature = inspect.signature(template.forward)
    passthrough = _t5_passthrough(signature) if family.name == "t5" else _hidden_passthrough(signature)
    slot = FullLayerSlot(
        lambda: _init_like_base(model, family.new_block(model, placement.stack, index)), passthrough, placement
    )
    blocks.insert(placement.after, slot)
    if family.layer_count_attr:
        # Causal stacks iterate `layers[: config.num_hidden_layers]` and size their KV cache by it.
        setattr(model.config, family.layer_count_attr, index + 1)
        layer_types = getattr(model.config, "layer_types", None)
        if isinstance(layer_types, list) and len(layer_types) == index:
            layer_types.append(layer_types[placement.after - 1])  # the entry of layer index `index`
    if family.name == "t5" and placement.stack == "decoder":
        decoder = model.get_decoder()
        decoder.config.num_layers = len(blocks)  # T5Stack sizes its own KV cache by it
        model.config.num_decoder_layers = len(blocks)
        # generate() sizes the decoder's KV cache by config.get_text_config(decoder=True), which for a
        # T5 config reads num_layers (the encoder's count) unless a `decoder_layers` entry is present
        # (transformers 5.x): without it a decoder longer than the encoder fails with an IndexError.
        model.config.decoder_layers = len(blocks)
    return slot


def _init_like_base(model: nn.Module, block: nn.Module) -> nn.Module:
    """Initialise a new block the way the base model initialises its own blocks.

    A block built from its class keeps PyTorch's default init (T5's ``q``: std 1/sqrt(3 d_model) =
    0.0255 at d_model 512, where T5 uses (d_model d_kv)^-1/2 = 0.0055). transformers' per-family
    ``_init_weights`` is the one definition of the base's init, so it is applied module by module
    (children first, as ``nn.Module.apply`` does, so a block-level rule overrides a generic one).
    """
    init_weights = getattr(model, "_init_weights", None)
    if init_weights is not None:
        block.apply(init_weights)
    return block


def _t5_passthrough(signature: inspect.Signature):
    # A T5 block returns (hidden_states, self-attention position bias, cross-attention position bias).
    def passthrough(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        get = bound.arguments.get
        return get("hidden_states"), get("position_bias"), get("encoder_decoder_position_bias")

    return passthrough


def _hidden_passthrough(signature: inspect.Signature):
    def passthrough(*args, **kwargs):
        return signature.bind(*args, **kwargs).arguments["hidden_states"]

    return passthrough
