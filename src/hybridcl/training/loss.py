"""The token loss: one definition for training, routing, EWC's Fisher and the loss matrix.

A batch holds ``input_ids``, ``attention_mask`` and ``labels`` (-100 where a token is not a
target), as :func:`hybridcl.data.batching.collate` builds it. The model gets no labels, so it
computes no loss of its own: seq2seq decoder inputs are the labels shifted right by the base
model's ``prepare_decoder_input_ids_from_labels``; causal models predict token t+1 from tokens
up to t. The model's output head runs on the target positions only (:func:`_head_on_rows`), and
cross-entropy is taken in float32 whatever the model's precision, a few hundred rows at a time
(:class:`_TargetNLL`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

import torch

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


def token_scores(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    kind: str,
    *,
    decoder_inputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
    accuracy: bool = False,
) -> TokenScores:
    """Per-token NLL of the batch's labels, and with ``accuracy`` whether each greedy prediction is right.

    ``decoder_inputs`` defaults to :func:`decoder_inputs_fn` of ``model`` (pass it when ``model``
    is wrapped, e.g. by DistributedDataParallel).
    """
    labels = batch["labels"]
    if kind == "seq2seq":
        shift = decoder_inputs or decoder_inputs_fn(model)
        if shift is None:
            raise TypeError(f"{type(model).__name__} has no prepare_decoder_input_ids_from_labels: not a seq2seq model")
        inputs = {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "decoder_input_ids": shift(labels),
        }
    else:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        labels = torch.cat(
            [labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], dim=1
        )  # position t predicts t+1
    mask = labels != IGNORE_INDEX
    with _head_on_rows(model, mask) as narrowed:
        logits = model(**inputs).logits  # [target tokens, vocabulary]
    if not narrowed:  # no output head to narrow: every position's logits came back
        logits = logits[mask]
    nll = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    nll[mask] = _TargetNLL.apply(logits, labels[mask])
    correct = None
    if accuracy:
        correct = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
        correct[mask] = logits.argmax(-1) == labels[mask]
    if kind != "seq2seq":
        nll, mask = nll[:, :-1], mask[:, :-1]
        correct = correct[:, :-1] if correct is not None else None
    return TokenScores(nll, mask, correct)


@contextlib.contextmanager
def _head_on_rows(model: torch.nn.Module, rows: torch.Tensor):
    """Within the block, the model's output head sees only the hidden states at ``rows`` (a
    ``[batch, length]`` bool mask) and the model returns ``[rows.sum(), vocabulary]`` logits; yields
    False (and changes nothing) for a model without ``get_output_embeddings``.

    The head is the largest matrix product of a small model (SmolLM2-135M: 28M of its 135M
    parameters, a 49K vocabulary) and its logits the largest tensors of a step; prompt and padding
    positions need neither. A forward pre-hook because Hugging Face's T5, Llama-family and GPT-2
    models apply their head last, to the hidden states alone (tests/test_loss.py checks each against
    its full logits); their ``logits_to_keep`` argument selects the same positions in every row.
    """
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:  # e.g. a model written for a test; Hugging Face's LMs all have one
        yield False
        return
    handle = head.register_forward_pre_hook(lambda _module, args: (args[0][rows], *args[1:]))
    try:
        yield True
    finally:
        handle.remove()


_CHUNK_ELEMENTS = 1 << 23  # float32 elements of one chunk of rows (32 MB)


class _TargetNLL(torch.autograd.Function):
    """``-log softmax(logits)[target]`` per row, float32, computed a chunk of rows at a time.

    Hand-written because ``F.cross_entropy`` over ``[tokens, vocabulary]`` logits keeps a float32
    copy of the logits and saves float32 log-probabilities of the same size for the backward pass
    (about 0.5 GB each for 8 x 512 tokens over codet5's 32K vocabulary, the largest tensors of a
    training step). Here the backward pass keeps only the logits, in their own precision (bf16
    under autocast), and the row log-sum-exps; float32 lives one chunk at a time. Same values as
    ``F.cross_entropy`` up to float32 rounding (tests/test_loss.py).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows = max(1, _CHUNK_ELEMENTS // max(1, logits.shape[-1]))
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        nll = torch.empty_like(lse)
        for start in range(0, logits.shape[0], rows):
            chunk = logits[start : start + rows].float()
            lse[start : start + rows] = torch.logsumexp(chunk, dim=-1)
            nll[start : start + rows] = lse[start : start + rows] - chunk.gather(
                1, targets[start : start + rows, None]
            ).squeeze(1)
        ctx.save_for_backward(logits, targets, lse)
        return nll

    @staticmethod
    def backward(ctx, grad_nll: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        rows = max(1, _CHUNK_ELEMENTS // max(1, logits.shape[-1]))
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], rows):
            end = start + rows
            probs = logits[start:end].float().sub_(lse[start:end, None]).exp_()  # softmax
            probs[torch.arange(probs.shape[0], device=probs.device), targets[start:end]] -= 1
            grad[start:end] = probs.mul_(grad_nll[start:end, None])
        return grad, None
