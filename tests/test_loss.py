"""The token loss's memory-lean cross-entropy gives F.cross_entropy's values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hybridcl.training.loss as loss_module
from hybridcl.training.loss import token_scores


class _Logits(torch.nn.Module):
    """A causal 'model' whose logits are a parameter (its output head the identity): token_scores's
    loss is then all there is."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)
        self.head = torch.nn.Identity()

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": self.head(self.logits)})()


@pytest.mark.parametrize("chunk", [1 << 23, 7 * 11])  # one chunk; chunks of 7 rows (11-token vocabulary)
def test_token_nll_and_its_gradient_equal_cross_entropy(monkeypatch, chunk):
    monkeypatch.setattr(loss_module, "_CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    logits = torch.randn(3, 9, 11) * 4
    labels = torch.randint(0, 11, (3, 9))
    labels[0, 5:] = -100
    labels[2, :3] = -100
    batch = {"input_ids": labels.clamp(min=0), "attention_mask": torch.ones_like(labels), "labels": labels}
    model = _Logits(logits.clone())
    scores = token_scores(model, batch, "causal", accuracy=True)
    scores.nll.sum().backward()

    reference = logits.clone().requires_grad_(True)
    target = labels[:, 1:]
    expected = F.cross_entropy(reference[:, :-1].transpose(1, 2), target, reduction="none", ignore_index=-100)
    expected.sum().backward()
    assert scores.mask.tolist() == (target != -100).tolist()
    assert torch.allclose(scores.nll, expected, rtol=1e-6, atol=1e-6)
    assert (scores.nll[~scores.mask] == 0).all()
    assert torch.allclose(model.logits.grad, reference.grad, rtol=1e-6, atol=1e-7)
    assert float(scores.nll.sum().detach()) == pytest.approx(float(expected.sum().detach()), rel=1e-6)


def test_bf16_logits_get_bf16_gradients_and_float32_losses():
    torch.manual_seed(1)
    logits = (torch.randn(2, 5, 13) * 3).bfloat16()
    labels = torch.randint(0, 13, (2, 5))
    batch = {"input_ids": labels, "attention_mask": torch.ones_like(labels), "labels": labels}
    model = _Logits(logits.clone())
    scores = token_scores(model, batch, "causal")
    scores.nll.sum().backward()
    expected = F.cross_entropy(logits.float()[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    assert scores.nll.dtype == torch.float32 and model.logits.grad.dtype == torch.bfloat16
    assert torch.allclose(scores.nll, expected, rtol=1e-6, atol=1e-6)


def test_the_backward_pass_keeps_the_logits_not_a_float32_copy():
    """issue 15 #4: F.cross_entropy kept float32 log-probabilities of the size of the logits (twice
    the bytes of bf16 logits) for the backward pass; the loss now keeps only the target rows'
    logits in their own dtype and one float32 number per row."""
    torch.manual_seed(2)
    rows, vocab = 2 * 63, 1000
    logits = torch.nn.Parameter(torch.randn(2, 64, vocab).bfloat16())
    labels = torch.randint(0, vocab, (2, 64))
    batch = {"input_ids": labels, "attention_mask": torch.ones_like(labels), "labels": labels}
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model = _Logits(logits.data)
        token_scores(model, batch, "causal")
    assert sum(saved) <= rows * vocab * 2 + rows * (4 + 8) + 4096  # bf16 logits + per-row lse and target


@pytest.mark.parametrize("arch", ["tiny:t5", "tiny:llama", "tiny:gpt2"])
def test_the_output_head_computes_target_rows_only_with_the_full_heads_values(arch):
    """issue 15: the head's matrix product and the logits cover target tokens only (not prompt or
    padding positions); NLL, accuracy and the gradients equal those of the model's full logits."""
    from hybridcl.config.experiment import ModelConfig
    from hybridcl.data.batching import collate
    from hybridcl.model.loading import load_base

    base = load_base(ModelConfig(name=arch))
    model = base.model.float().requires_grad_(True)
    torch.manual_seed(0)
    features = [
        {"input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100, -100, -100, 11, 12, 13]},
        {"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 14, 15]},
    ]
    if base.kind == "seq2seq":
        features = [{"input_ids": [5, 6, 7, 8], "labels": [11, 12, 13]}, {"input_ids": [5, 6], "labels": [14]}]
    batch = collate(features, base.tokenizer.pad_token_id or 0, base.kind)
    rows = []
    handle = model.get_output_embeddings().register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape))
    scores = token_scores(model, batch, base.kind, accuracy=True)
    handle.remove()
    targets = sum(sum(label != -100 for label in f["labels"][1 if base.kind == "causal" else 0 :]) for f in features)
    assert rows == [
        torch.Size(
            [targets, model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model]
        )
    ]
    scores.nll.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    labels = batch["labels"]
    if base.kind == "seq2seq":
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).logits
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = labels[:, 1:]
    expected = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
    expected.sum().backward()
    assert scores.mask.tolist() == (labels != -100).tolist()
    assert torch.allclose(scores.nll, expected, rtol=1e-5, atol=1e-6)
    assert scores.correct.tolist() == ((logits.argmax(-1) == labels) & (labels != -100)).tolist()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads[name], p.grad, rtol=1e-4, atol=1e-6), name
