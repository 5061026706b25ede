"""Batched generation for evaluation: one function for seq2seq (T5) and causal (Llama, GPT-2) models.

Prompts are tokenised once, sorted longest first (so batches hold similar lengths and an
out-of-memory error shows up on the first batch), generated in batches with the KV cache, and the
outputs are put back in input order. Greedy by default; beam search (``num_beams``) and sampling
(``do_sample``, ``temperature``, ``top_p``) by argument. Causal prompts are left-padded and
left-truncated (the end of a prompt is what the model continues), and only the new tokens are
returned; a trailing EOS that the tokenizer appends to a causal prompt is dropped, since the model
should continue the prompt, not start after an end of text. Every output is cut at its first EOS
and decoded without special tokens and without the tokenizer's English space clean-up.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from hybridcl.constants import Kind


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:  # GPT-2 style tokenizers have no pad token
        return tokenizer.eos_token_id
    raise ValueError("tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")


def encode_prompts(tokenizer, prompts: Sequence[str], kind: Kind, max_source_len: int) -> list[list[int]]:
    """Token ids of each prompt as the model reads it: causal prompts left-cut and without a closing EOS."""
    ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for seq in ids:
        seq = list(seq)
        if kind == "causal":
            if eos is not None and len(seq) > 1 and seq[-1] == eos:
                seq = seq[:-1]
            seq = seq[-max_source_len:]
        elif len(seq) > max_source_len:
            # keep the tokenizer's closing special token (T5's </s>) when truncating on the right
            seq = seq[: max_source_len - 1] + [seq[-1]] if eos is not None and seq[-1] == eos else seq[:max_source_len]
        out.append(seq)
    return out


def _batch_tensors(seqs: list[list[int]], pad_id: int, left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if left:
            ids[row, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s):] = 1
        else:
            ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[row, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _cut_at_eos(ids: list[int], eos: int | None) -> list[int]:
    if eos is not None and eos in ids:
        return ids[: ids.index(eos)]
    return ids


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    kind: Kind,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    num_beams: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    max_source_len: int = 512,
    seed: int = 0,
    progress: bool = True,
    desc: str = "generate",
) -> list[str] | list[list[str]]:
    """Generate a continuation for every prompt; returns texts in the order of ``prompts``.

    ``kind`` is ``"seq2seq"`` (output = decoder text) or ``"causal"`` (output = the new tokens
    only). At most ``max_new_tokens`` tokens are generated per output; generation of an output
    stops at EOS, which is not included. With ``num_return_sequences > 1`` each entry is a list of
    that many texts. ``seed`` seeds sampling inside a forked RNG, so the caller's RNG state is
    unchanged. The model is put in eval mode for the call and restored afterwards.
    """
    if kind not in ("seq2seq", "causal"):
        raise ValueError(f"kind {kind!r}: expected 'seq2seq' or 'causal'")
    if num_return_sequences > num_beams and not do_sample:
        raise ValueError(f"num_return_sequences={num_return_sequences} needs num_beams >= it or do_sample=True")
    if not prompts:
        return []
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = _pad_id(tokenizer)
    encoded = encode_prompts(tokenizer, prompts, kind, max_source_len)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # stable: ties keep input order

    gen_kwargs = dict(
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        do_sample=do_sample,
        num_return_sequences=num_return_sequences,
        use_cache=True,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:  # neutralise sampling settings a model's generation_config may carry
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if num_beams > 1:
        gen_kwargs.update(early_stopping=True)

    results: list = [None] * len(encoded)
    was_training = model.training
    model.eval()
    devices = [device.index] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            bar = tqdm(total=len(encoded), desc=desc, unit="ex", disable=not progress, leave=False)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask = _batch_tensors([encoded[i] for i in idx], pad, left=(kind == "causal"), device=device)
                out = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
                # causal: drop the prompt; seq2seq: drop the decoder start token (BART's is EOS)
                out = out[:, ids.shape[1]:] if kind == "causal" else out[:, 1:]
                # no English clean-up (" ," -> ","): it changes code, and tokenizer files saved by
                # transformers < 4.45 switch it on
                texts = [
                    tokenizer.decode(_cut_at_eos(row.tolist(), eos), skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)
                    for row in out
                ]
                for n, i in enumerate(idx):
                    group = texts[n * num_return_sequences : (n + 1) * num_return_sequences]
                    results[i] = group if num_return_sequences > 1 else group[0]
                bar.update(len(idx))
            bar.close()
    finally:
        model.train(was_training)
    return results
