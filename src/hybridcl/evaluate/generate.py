"""Batched generation for evaluation: one function for seq2seq (T5) and causal (Llama, GPT-2) models.

Prompts are tokenised once, sorted longest first (so batches hold similar lengths and an
out-of-memory error shows up on the first batch), generated in batches with the KV cache, and the
outputs are put back in input order. Greedy decoding runs hybridcl's own loop
(:mod:`hybridcl.evaluate.greedy`): an output that has ended leaves its batch, a waiting prompt
takes its place, and while the batch is small tokens drafted from the text so far are checked in
one pass; the tokens are those ``model.generate`` chooses. Greedy by default; beam search (``num_beams``) and sampling
(``do_sample``, ``temperature``, ``top_p``) by argument. Causal prompts are left-padded and
left-truncated (the end of a prompt is what the model continues), and only the new tokens are
returned; a trailing EOS that the tokenizer appends to a causal prompt is dropped, since the model
should continue the prompt, not start after an end of text. Every output is cut at its first EOS
and decoded without special tokens and without the tokenizer's English space clean-up.

For generated code (``code_language``), generation also stops where the function ends
(:mod:`hybridcl.evaluate.stopping`: a closing code fence, Python's next top-level definition,
the brace that closes a JavaScript function) and the output is cut there; outputs that end at
EOS first are unchanged. With ``return_hit_limit`` the caller also learns which outputs ran into
``max_new_tokens`` before their function (or text) ended, i.e. were cut by the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from transformers import StoppingCriteriaList

from hybridcl.constants import CODE_DIRECTIONS, Kind
from hybridcl.evaluate.greedy import greedy_generate, plain_greedy
from hybridcl.evaluate.stopping import FunctionEndCriteria, function_end, functions_ended
from hybridcl.progress import progress_bar


def code_language(task_language: str, direction: str, completion_target: str = "whole") -> str | None:
    """What :func:`generate`'s ``code_language`` is for a task: its language when the outputs are
    whole functions (text-to-code, completion of the whole function), None when they are text
    (code-to-text) or the rest of a function (``completion_target="rest"``: the end scanners look
    for the end of a function that starts in the output, which the rest does not)."""
    if direction == "completion" and completion_target == "rest":
        return None
    return task_language if direction in CODE_DIRECTIONS else None


def cut_share(hit_limit: Sequence[bool]) -> float | None:
    """Percent (0-100) of generations the token limit cut (:func:`generate`'s ``hit_limit``); None for none."""
    return 100.0 * sum(bool(h) for h in hit_limit) / len(hit_limit) if hit_limit else None


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:  # GPT-2 style tokenizers have no pad token
        return tokenizer.eos_token_id
    raise ValueError("tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")


def encode_texts(tokenizer, texts: Sequence[str], kind: Kind, max_source_len: int) -> list[list[int]]:
    """Token ids of raw texts as the model reads them: causal ones left-cut and without a closing EOS.

    For texts with no prompt template (routing scores the bare source); a task's prompt is encoded by
    :func:`hybridcl.data.batching.encode_prompts`, which cuts inside the template."""
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
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
            ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s) :] = 1
        else:
            ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[row, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _cut_at_eos(ids: list[int], eos: int | None) -> list[int]:
    if eos is not None and eos in ids:
        return ids[: ids.index(eos)]
    return ids


@dataclass(frozen=True)
class GenerationSettings:
    """How outputs are generated: built once from a run's config (:meth:`from_config`) and used by the
    evaluation, routing, HumanEval and inference alike. Lengths in tokens."""

    max_new_tokens: int = 128
    batch_size: int = 16
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    max_source_len: int = 512  # raw-text prompts only: token-id prompts come already cut
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of that size twice in an output (the seed's 2)

    @classmethod
    def from_config(cls, config) -> GenerationSettings:
        """The settings of an :class:`~hybridcl.config.ExperimentConfig` (its ``eval`` and ``data``)."""
        e = config.eval
        return cls(
            e.max_new_tokens,
            e.batch_size,
            e.num_beams,
            e.do_sample,
            e.temperature,
            e.top_p,
            config.data.max_source_len,
            e.no_repeat_ngram_size,
        )


def generate(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    kind: Kind,
    settings: GenerationSettings | None = None,
    num_return_sequences: int = 1,
    seed: int = 0,
    progress: bool = True,
    desc: str = "generate",
    code_language: str | None = None,
    return_hit_limit: bool = False,
    plain: bool = False,
    **overrides,
):
    """Generate a continuation for every prompt; returns texts in the order of ``prompts``.

    ``prompts`` are token ids (from :func:`hybridcl.data.batching.encode_prompts`, the encoder
    training uses) or raw texts, tokenised here (causal: left-cut to ``max_source_len``).
    ``settings`` (default :class:`GenerationSettings`) with any of its fields overridden by keyword,
    e.g. ``max_new_tokens=64``.

    ``kind`` is ``"seq2seq"`` (output = decoder text) or ``"causal"`` (output = the new tokens
    only). At most ``max_new_tokens`` tokens are generated per output; generation of an output
    stops at EOS, which is not included. ``code_language`` (``"python"``, ``"javascript"``, or
    another language for the code-fence rule alone; None for text, e.g. docstrings): the outputs
    are functions, and each stops and is cut where its function ends (the end is not included:
    Python's next definition, what follows the closing brace or fence). With
    ``num_return_sequences > 1`` each entry is a list of that many texts. ``seed`` seeds sampling
    inside a forked RNG, so the caller's RNG state is unchanged. The model is put in eval mode for
    the call and restored afterwards.

    With ``return_hit_limit``, returns ``(texts, hit_limit)``: ``hit_limit`` has the same shape
    as ``texts``, True where the output reached ``max_new_tokens`` tokens with neither EOS nor
    the end of its function, i.e. the limit cut it.

    Greedy decoding of one output per prompt runs :func:`hybridcl.evaluate.greedy.greedy_generate`:
    finished outputs leave the batch and (decoder-only models) waiting prompts take their place
    and drafted tokens are checked, with the tokens ``model.generate`` chooses. Beam search, sampling, ``no_repeat_ngram_size``
    and models whose generation config adds to greedy decoding run ``model.generate`` batch by
    batch, as does ``plain=True`` (the reference the fast loop is tested and measured against).
    """
    if kind not in ("seq2seq", "causal"):
        raise ValueError(f"kind {kind!r}: expected 'seq2seq' or 'causal'")
    s = replace(settings or GenerationSettings(), **overrides)
    max_new_tokens, batch_size, num_beams, do_sample = s.max_new_tokens, s.batch_size, s.num_beams, s.do_sample
    if num_return_sequences > num_beams and not do_sample:
        raise ValueError(f"num_return_sequences={num_return_sequences} needs num_beams >= it or do_sample=True")
    if not prompts:
        return ([], []) if return_hit_limit else []
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = _pad_id(tokenizer)
    if isinstance(prompts[0], str):
        encoded = encode_texts(tokenizer, prompts, kind, s.max_source_len)
    else:
        encoded = [list(p) for p in prompts]
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
        gen_kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
    else:  # neutralise sampling settings a model's generation_config may carry
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if num_beams > 1:
        gen_kwargs.update(early_stopping=True)
    if s.no_repeat_ngram_size > 0:  # the seed's setting (2); 0 leaves the model's generation_config alone
        gen_kwargs.update(no_repeat_ngram_size=s.no_repeat_ngram_size)

    # beams, sampling and the seed's no_repeat_ngram_size go through generate: its logits processors
    # and beam bookkeeping are not rewritten here
    fast = (
        not plain
        and num_beams == 1
        and not do_sample
        and num_return_sequences == 1
        and s.no_repeat_ngram_size == 0
        and plain_greedy(model, kind == "seq2seq")
    )
    results: list = [None] * len(encoded)
    was_training = model.training
    model.eval()
    devices = [device.index] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            bar = progress_bar(total=len(encoded), desc=desc, unit="ex", enabled=progress, leave=False)
            if fast:
                ended = (
                    None if code_language is None else (lambda rows: functions_ended(tokenizer, rows, code_language))
                )
                outputs = greedy_generate(
                    model,
                    [encoded[i] for i in order],
                    encoder_decoder=kind == "seq2seq",
                    batch_size=batch_size,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad,
                    eos_token_id=eos,
                    ended=ended,
                    on_finished=lambda _: bar.update(1),
                )
                for i, ids in zip(order, outputs):
                    results[i] = _finish(ids, tokenizer, eos, code_language)
            else:
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    ids, mask = _batch_tensors([encoded[i] for i in idx], pad, left=(kind == "causal"), device=device)
                    start = ids.shape[1] if kind == "causal" else 1
                    stop = {}
                    if code_language is not None:
                        stop["stopping_criteria"] = StoppingCriteriaList(
                            [FunctionEndCriteria(tokenizer, code_language, start, eos)]
                        )
                    out = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs, **stop)
                    # causal: drop the prompt; seq2seq: drop the decoder start token (BART's is EOS)
                    decoded = [_finish(row.tolist(), tokenizer, eos, code_language) for row in out[:, start:]]
                    for n, i in enumerate(idx):
                        group = decoded[n * num_return_sequences : (n + 1) * num_return_sequences]
                        results[i] = group if num_return_sequences > 1 else group[0]
                    bar.update(len(idx))
            bar.close()
    finally:
        model.train(was_training)
    texts = [[t for t, _ in r] if num_return_sequences > 1 else r[0] for r in results]
    if not return_hit_limit:
        return texts
    return texts, [[h for _, h in r] if num_return_sequences > 1 else r[1] for r in results]


def _finish(ids: list[int], tokenizer, eos: int | None, code_language: str | None) -> tuple[str, bool]:
    """One output's text, cut at EOS and at the end of its function, and whether the limit cut it."""
    ended = eos is not None and eos in ids
    # no English clean-up (" ," -> ","): it changes code, and tokenizer files saved by
    # transformers < 4.45 switch it on
    text = tokenizer.decode(_cut_at_eos(ids, eos), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if code_language is None:
        return text, not ended
    end = function_end(text, code_language, final=True)
    if end is None:
        return text, not ended
    if not text[end:].strip():  # nothing but white space after the end: the text as generated
        return text, False
    return text[:end].rstrip(), False
