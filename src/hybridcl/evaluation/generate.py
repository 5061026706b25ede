"""Batched generation for evaluation: one function for seq2seq (T5) and causal (Llama, GPT-2) models.

Prompts are tokenised once, sorted longest first (so batches hold similar lengths and an
out-of-memory error shows up on the first batch), generated in batches with the KV cache, and the
outputs are put back in input order. Greedy decoding runs hybridcl's own loop
(:mod:`hybridcl.evaluation.greedy`): an output that has ended leaves its batch, a waiting prompt
takes its place, and while the batch is small tokens drafted from the text so far are checked in
one pass; the tokens are those ``model.generate`` chooses. Greedy by default; beam search (``num_beams``) and sampling
(``do_sample``, ``temperature``, ``top_p``) by argument. Causal prompts are left-padded and
left-truncated (the end of a prompt is what the model continues), and only the new tokens are
returned; a trailing EOS that the tokenizer appends to a causal prompt is dropped, since the model
should continue the prompt, not start after an end of text. Every output is cut at its first EOS
and decoded without special tokens and without the tokenizer's English space clean-up.

For generated code (``code_language``), generation also stops where the function ends
(:mod:`hybridcl.evaluation.stopping`: a closing code fence, Python's next top-level definition,
the brace that closes a JavaScript function) and the output is cut there; outputs that end at
EOS first are unchanged. :class:`Generations` also says which outputs ran into
``max_new_tokens`` before their function (or text) ended, i.e. were cut by the limit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteriaList

from hybridcl.constants import CODE_DIRECTIONS, Kind
from hybridcl.data.batching import pad_batch
from hybridcl.evaluation.greedy import greedy_generate, supports_fast_greedy
from hybridcl.evaluation.stopping import FunctionEndCriteria, function_end, functions_ended
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
        """The settings of an :class:`~hybridcl.config.experiment.ExperimentConfig` (its ``eval`` and ``data``)."""
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


@dataclass(frozen=True)
class Generations:
    """What :func:`generate` returns, in the order of the prompts.

    ``samples[k]``: prompt ``k``'s ``num_return_sequences`` outputs; ``samples_hit_limit[k]``: for each,
    whether ``max_new_tokens`` cut it (neither EOS nor the end of its function came first).
    :attr:`texts` and :attr:`hit_limit` are the first output's, one per prompt.
    """

    samples: list[list[str]]
    samples_hit_limit: list[list[bool]]

    @property
    def texts(self) -> list[str]:
        return [s[0] for s in self.samples]

    @property
    def hit_limit(self) -> list[bool]:
        return [h[0] for h in self.samples_hit_limit]


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
    hf_generate: bool = False,
) -> Generations:
    """Generate a continuation for every prompt; returns :class:`Generations` in the order of ``prompts``.

    ``prompts`` are token ids (from :func:`hybridcl.data.batching.encode_prompts`, the encoder
    training uses) or raw texts, tokenised here (causal: left-cut to ``max_source_len``).
    ``settings`` (default :class:`GenerationSettings`) says how: lengths, beams, sampling.

    ``kind`` is ``"seq2seq"`` (output = decoder text) or ``"causal"`` (output = the new tokens
    only). At most ``max_new_tokens`` tokens are generated per output; generation of an output
    stops at EOS, which is not included. ``code_language`` (``"python"``, ``"javascript"``, or
    another language for the code-fence rule alone; None for text, e.g. docstrings): the outputs
    are functions, and each stops and is cut where its function ends (the end is not included:
    Python's next definition, what follows the closing brace or fence). ``num_return_sequences``
    outputs per prompt are in :attr:`Generations.samples`. ``seed`` seeds sampling
    inside a forked RNG, so the caller's RNG state is unchanged. The model is put in eval mode for
    the call and restored afterwards.

    ``hit_limit`` is True where an output reached ``max_new_tokens`` tokens with neither EOS nor
    the end of its function, i.e. the limit cut it.

    Greedy decoding of one output per prompt runs :func:`hybridcl.evaluation.greedy.greedy_generate`
    (the tokens ``model.generate`` chooses, fewer passes); beams, sampling, ``no_repeat_ngram_size``,
    generation configs that add to greedy decoding and ``hf_generate=True`` (the reference the fast
    loop is tested and measured against) run ``model.generate`` batch by batch.
    """
    if kind not in ("seq2seq", "causal"):
        raise ValueError(f"kind {kind!r}: expected 'seq2seq' or 'causal'")
    s = settings or GenerationSettings()
    if num_return_sequences > s.num_beams and not s.do_sample:
        raise ValueError(f"num_return_sequences={num_return_sequences} needs num_beams >= it or do_sample=True")
    if not prompts:
        return Generations([], [])
    if all(isinstance(p, str) for p in prompts):
        encoded = encode_texts(tokenizer, [str(p) for p in prompts], kind, s.max_source_len)
    else:
        encoded = [list(p) for p in prompts if not isinstance(p, str)]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # stable: ties keep input order
    sorted_prompts = [encoded[i] for i in order]
    # beams, sampling and no_repeat_ngram_size go through generate (its logits processors, its beams)
    fast = not hf_generate and _greedy_only(s, num_return_sequences) and supports_fast_greedy(model, kind == "seq2seq")
    with (
        _eval_mode(model, seed),
        progress_bar(total=len(encoded), desc=desc, unit="ex", enabled=progress, leave=False) as bar,
    ):
        if fast:
            outputs = [[o] for o in _fast_greedy(model, tokenizer, sorted_prompts, kind, s, code_language, bar)]
        else:
            outputs = _hf_generate(model, tokenizer, sorted_prompts, kind, s, num_return_sequences, code_language, bar)
    return _in_input_order(order, outputs)


@contextlib.contextmanager
def _eval_mode(model, seed: int):
    """``model`` in eval mode under ``torch.inference_mode``, sampling seeded by ``seed`` inside a forked
    RNG (the caller's RNG state is unchanged); the model's mode is restored afterwards."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []), torch.inference_mode():
            torch.manual_seed(seed)
            yield
    finally:
        model.train(was_training)


def _in_input_order(order: list[int], outputs: list[list[tuple[str, bool]]]) -> Generations:
    """The :class:`Generations` of ``outputs`` (``(text, hit_limit)`` per sample, one list per prompt
    in the sorted order ``order``) in the prompts' input order."""
    in_order: list[list[tuple[str, bool]]] = [[] for _ in outputs]
    for i, out in zip(order, outputs, strict=True):
        in_order[i] = out
    return Generations([[t for t, _ in r] for r in in_order], [[h for _, h in r] for r in in_order])


def _greedy_only(s: GenerationSettings, num_return_sequences: int) -> bool:
    return s.num_beams == 1 and not s.do_sample and num_return_sequences == 1 and s.no_repeat_ngram_size == 0


def _fast_greedy(
    model, tokenizer, prompts: list[list[int]], kind: Kind, s: GenerationSettings, code_language: str | None, bar
) -> list[tuple[str, bool]]:
    """Greedy outputs of ``prompts`` by :func:`hybridcl.evaluation.greedy.greedy_generate`: (text, hit_limit) each."""
    eos = tokenizer.eos_token_id

    def ended(rows: list[list[int]]) -> list[bool]:
        assert code_language is not None
        return functions_ended(tokenizer, rows, code_language)

    outputs = greedy_generate(
        model,
        prompts,
        encoder_decoder=kind == "seq2seq",
        batch_size=s.batch_size,
        max_new_tokens=s.max_new_tokens,
        pad_token_id=_pad_id(tokenizer),
        eos_token_id=eos,
        ended=None if code_language is None else ended,
        on_finished=lambda _: bar.update(1),
    )
    return [_finish(ids, tokenizer, eos, code_language) for ids in outputs]


def _hf_generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    kind: Kind,
    s: GenerationSettings,
    num_return_sequences: int,
    code_language: str | None,
    bar,
) -> list[list[tuple[str, bool]]]:
    """``model.generate`` batch by batch: per prompt, ``num_return_sequences`` (text, hit_limit) pairs."""
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, _pad_id(tokenizer)
    gen_kwargs = _hf_generate_kwargs(s, num_return_sequences, pad, eos)
    out_all: list[list[tuple[str, bool]]] = []
    for first in range(0, len(prompts), s.batch_size):
        batch = prompts[first : first + s.batch_size]
        input_ids, mask = pad_batch(batch, pad, left=(kind == "causal"), device=device)
        # causal: the new tokens follow the prompt; seq2seq: they follow the decoder start token (BART's is EOS)
        width = input_ids.shape[1] if kind == "causal" else 1
        stop = {}
        if code_language is not None:
            stop["stopping_criteria"] = StoppingCriteriaList(
                [FunctionEndCriteria(tokenizer, code_language, width, eos)]
            )
        out = model.generate(input_ids=input_ids, attention_mask=mask, **gen_kwargs, **stop)
        decoded = [_finish(row.tolist(), tokenizer, eos, code_language) for row in out[:, width:]]
        n = num_return_sequences
        out_all += [decoded[k * n : (k + 1) * n] for k in range(len(batch))]
        bar.update(len(batch))
    return out_all


def _hf_generate_kwargs(s: GenerationSettings, num_return_sequences: int, pad: int, eos: int | None) -> dict:
    gen_kwargs: dict[str, Any] = dict(
        max_new_tokens=s.max_new_tokens,
        num_beams=s.num_beams,
        do_sample=s.do_sample,
        num_return_sequences=num_return_sequences,
        use_cache=True,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    if s.do_sample:
        gen_kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
    else:  # neutralise sampling settings a model's generation_config may carry
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if s.num_beams > 1:
        gen_kwargs.update(early_stopping=True)
    if s.no_repeat_ngram_size > 0:  # the seed's setting (2); 0 leaves the model's generation_config alone
        gen_kwargs.update(no_repeat_ngram_size=s.no_repeat_ngram_size)
    return gen_kwargs


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
