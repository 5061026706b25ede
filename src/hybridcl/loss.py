"""The token loss: one definition for training, routing, EWC's Fisher and the loss matrix.

A batch holds ``input_ids``, ``attention_mask`` and ``labels`` (-100 where a token is not a
target), as :func:`hybridcl.data.batching.collate` builds it. The model gets no labels, so it
computes no loss of its own: seq2seq decoder inputs are the labels shifted right by the base
model's ``prepare_decoder_input_ids_from_labels``; causal models predict token t+1 from tokens
up to t. Cross-entropy is taken in float32 whatever the model's precision.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from hybridcl.constants import IGNORE_INDEX


class TokenScores(NamedTuple):
    """``[batch, target length]`` tensors; entries outside ``mask`` are 0 / False."""

    nll: torch.Tensor  # negative log-likelihood per target token, nats, float32
    mask: torch.Tensor  # bool: a target token
    correct: torch.Tensor | None  # bool: the greedy (argmax) prediction is the target; None unless asked for


def decoder_inputs_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The base model's ``prepare_decoder_input_ids_from_labels`` (seq2seq), else ``None``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "prepare_decoder_input_ids_from_labels", None)


def token_scores(model: torch.nn.Module, batch: dict[str, torch.Tensor], kind: str, *,
                 decoder_inputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 accuracy: bool = False) -> TokenScores:
    """Per-token NLL of the batch's labels, and with ``accuracy`` whether each greedy prediction is right.

    ``decoder_inputs`` defaults to :func:`decoder_inputs_fn` of ``model`` (pass it when ``model``
    is wrapped, e.g. by DistributedDataParallel).
    """
    labels = batch["labels"]
    if kind == "seq2seq":
        shift = decoder_inputs or decoder_inputs_fn(model)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=shift(labels)).logits
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    nll = F.cross_entropy(logits.float().transpose(1, 2), labels.masked_fill(~mask, 0), reduction="none") * mask
    correct = (logits.argmax(-1) == labels) & mask if accuracy else None
    return TokenScores(nll, mask, correct)
