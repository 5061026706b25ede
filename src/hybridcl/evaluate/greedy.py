"""Greedy decoding whose batch sheds finished rows and, for decoder-only models, takes in waiting prompts.

``model.generate`` runs a batch until its last row ends: a row that stopped at EOS or at the end of
its function (:mod:`hybridcl.evaluate.stopping`) is fed padding until then, and the next batch
waits for the slowest row of this one. On the evaluation's workload (SmolLM2-135M, 128 new
tokens, a generated function stopping at its end) one row in eight runs to the limit and the
others stop after a quarter of it, so most of a batch's rows are padding most of the time.

:func:`greedy_generate` drives the model's forward with its KV cache (transformers'
``DynamicCache``) itself, one token per row per step, and chooses every token as ``generate``
does with ``do_sample=False, num_beams=1`` (the argmax of the last position's float32 logits;
position ids from the attention mask; the mask dropped when a batch has no padding; only the last
position's logits). A row leaves the batch as soon as it ends (its cache rows go with it:
``Cache.batch_select_indices``), and for decoder-only models a waiting prompt takes its place:
it is prefilled alone (with any others admitted at that step) and its cache joins the batch's,
both left-padded to the longer one; its positions and attention mask keep it apart from the
padding. Columns that are padding for every row left are cut off the cache.

Encoder-decoder models (T5, BART) shed finished rows but take in no new ones: the decoder's
positions come from the cache length, shared by the whole batch, so a late row cannot be padded
into it. Decoder-only caches other than plain ``DynamicLayer`` ones (sliding windows, linear
attention) and models whose forward takes no ``position_ids`` shed rows without taking in new
ones for the same reason.

The outputs are the token ids ``generate`` chooses for each prompt, up to float rounding: a row's
logits depend in the last bits on the batch it is computed in (the matrix-product kernels differ
with the number of rows; measured 6e-5 on SmolLM2-135M logits between a row alone and in a batch
of four), which ``generate`` itself shows between two batch sizes. Greedy outputs change only
where two tokens' logits are that close: the benchmark counts identical outputs.
"""
from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.modeling_outputs import BaseModelOutput

__all__ = ["greedy_generate", "forward_parameters", "plain_greedy", "decoder_start_token_id"]

# generation_config keys that leave greedy decoding as it is: token ids, bookkeeping, and the keys that
# hybridcl's generate call sets itself (sampling off, one beam, max_new_tokens). Any other key (a
# repetition penalty, forced or suppressed tokens, a minimum length...) adds a logits processor to
# generate: then generate runs, not this loop.
_NEUTRAL_KEYS = {"bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "use_cache",
                 "output_attentions", "output_hidden_states", "_from_model_config", "transformers_version",
                 "max_length", "max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "num_beams",
                 "early_stopping", "num_return_sequences"}


def forward_parameters(model) -> set[str]:
    """The argument names of the forward of ``model`` (of the model under a PEFT wrapper)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(inner.forward).parameters)


def decoder_start_token_id(model) -> int | None:
    """The token an encoder-decoder's output starts from, as generate picks it (the generation config's
    decoder start token, else its BOS); None where there is none or it is not one id."""
    config = getattr(model, "generation_config", None) or model.config
    value = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
    return value if isinstance(value, int) else None


def plain_greedy(model, encoder_decoder: bool) -> bool:
    """Whether :func:`greedy_generate` chooses what ``generate(do_sample=False, num_beams=1)`` does for
    ``model``: its generation config adds nothing to greedy decoding, its forward takes a ``cache``,
    and an encoder-decoder has a decoder start token."""
    config = getattr(model, "generation_config", None)
    if config is None or set(config.to_diff_dict()) - _NEUTRAL_KEYS:
        return False
    if "cache" not in forward_parameters(model):
        return False
    return not encoder_decoder or decoder_start_token_id(model) is not None


@dataclass
class _Rows:
    """The rows in flight: one per prompt being generated, in the order of the batch."""

    prompts: list[int]  # the index of each row's prompt
    cache: object  # DynamicCache (decoder-only) or EncoderDecoderCache
    pending: torch.Tensor  # [rows] the token each row feeds next (chosen, not yet in the cache)
    mask: torch.Tensor | None  # decoder-only: [rows, cache length] 1 = a real token; None: no padding
    positions: torch.Tensor | None  # decoder-only: [rows] the position of the pending token
    encoder: BaseModelOutput | None = None  # encoder-decoder: the encoder's output
    encoder_mask: torch.Tensor | None = None  # encoder-decoder: [rows, source length]

    def __len__(self) -> int:
        return len(self.prompts)


def greedy_generate(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    encoder_decoder: bool,
    batch_size: int,
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_id: int | None,
    ended: Callable[[list[list[int]]], list[bool]] | None = None,
    on_finished: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """The greedy continuation of each prompt (token ids), in the order of ``prompts``.

    ``prompts``: token ids, generated in the order given (sort them by length first: rows of
    similar length waste less padding). At most ``batch_size`` rows are in flight. Each output
    holds at most ``max_new_tokens`` tokens and stops after EOS (included) or where ``ended``
    says its text has ended (``ended`` gets the token ids of the rows still open after a step
    and returns a flag for each; the ending token is included). ``on_finished(k)`` is called
    when prompt ``k`` is done. The model runs in the caller's grad mode (use
    ``torch.inference_mode``). Use it where :func:`plain_greedy` holds.
    """
    decoder = _Decoder(model, encoder_decoder, pad_token_id, decoder_start_token_id(model) if encoder_decoder else None)
    outputs: list[list[int]] = [[] for _ in prompts]
    waiting = deque(range(len(prompts)))
    rows: _Rows | None = None
    while waiting or rows is not None:
        free = batch_size - (len(rows) if rows is not None else 0)
        if waiting and free > 0 and (rows is None or decoder.takes_new_rows):
            new = decoder.start([waiting.popleft() for _ in range(min(free, len(waiting)))], prompts)
            new = _record(new, decoder, outputs, max_new_tokens, eos_token_id, ended, on_finished)
            rows = new if rows is None else (decoder.join(rows, new) if new is not None else rows)
            continue  # the joined rows' pending tokens are fed together, at the next step
        decoder.step(rows)
        rows = _record(rows, decoder, outputs, max_new_tokens, eos_token_id, ended, on_finished)
    return outputs


def _record(rows: _Rows, decoder: _Decoder, outputs, max_new_tokens, eos, ended, on_finished) -> _Rows | None:
    """Append each row's pending token to its output; drop the rows that are done (None: all of them)."""
    tokens = rows.pending.tolist()
    done = []
    for prompt, token in zip(rows.prompts, tokens):
        outputs[prompt].append(token)
        done.append(token == eos or len(outputs[prompt]) >= max_new_tokens)
    if ended is not None:
        open_ = [k for k, d in enumerate(done) if not d]
        for k, flag in zip(open_, ended([outputs[rows.prompts[k]] for k in open_])):
            done[k] = flag
    if not any(done):
        return rows
    if on_finished is not None:
        for prompt, d in zip(rows.prompts, done):
            if d:
                on_finished(prompt)
    keep = [k for k, d in enumerate(done) if not d]
    return decoder.keep(rows, keep) if keep else None


class _Decoder:
    """The model's forward for one step, and the bookkeeping of the rows' caches."""

    def __init__(self, model, encoder_decoder: bool, pad: int, decoder_start: int | None):
        self.model, self.encoder_decoder, self.pad, self.decoder_start = model, encoder_decoder, pad, decoder_start
        self.device = next(model.parameters()).device
        params = forward_parameters(model)
        self.position_ids = "position_ids" in params and not encoder_decoder
        self.logits_to_keep = "logits_to_keep" in params
        # set by the first prefill, once the cache's layer types are known
        self.takes_new_rows = False

    def _forward(self, **kwargs):
        if self.logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs, use_cache=True, return_dict=True)
        # as generate: the last position's logits in float32, argmax (the first of equal maxima)
        return out.cache, out.logits[:, -1].to(dtype=torch.float32).argmax(-1)

    def start(self, group: list[int], prompts) -> _Rows:
        """Encode/prefill the prompts in ``group``; their first tokens become pending."""
        seqs = [list(prompts[k]) for k in group]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, seq in enumerate(seqs):  # decoder-only: left padding (the prompt ends where generation starts)
            span = slice(0, len(seq)) if self.encoder_decoder else slice(width - len(seq), width)
            ids[r, span] = torch.tensor(seq, dtype=torch.long)
            mask[r, span] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.encoder_decoder:
            encoder = self.model.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True)
            start = torch.full((len(seqs), 1), self.decoder_start, dtype=torch.long, device=self.device)
            cache, pending = self._forward(encoder_outputs=encoder, attention_mask=mask, decoder_input_ids=start)
            return _Rows(group, cache, pending, None, None, encoder, mask)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        kwargs = {"input_ids": ids}
        padded = not bool(mask.all())
        if padded:  # generate drops an all-ones mask (SDPA's causal path); so does this
            kwargs["attention_mask"] = mask
        if self.position_ids:
            kwargs["position_ids"] = positions
        cache, pending = self._forward(**kwargs)
        self.takes_new_rows = self.position_ids and all(type(layer) is DynamicLayer for layer in cache.layers)
        return _Rows(group, cache, pending, mask if padded else None, positions[:, -1] + 1)

    def step(self, rows: _Rows) -> None:
        """Feed every row's pending token; the next ones become pending."""
        token = rows.pending[:, None]
        if self.encoder_decoder:
            rows.cache, rows.pending = self._forward(encoder_outputs=rows.encoder, attention_mask=rows.encoder_mask,
                                                     decoder_input_ids=token, cache=rows.cache)
            return
        kwargs = {"input_ids": token, "cache": rows.cache}
        if rows.mask is not None:
            rows.mask = torch.cat([rows.mask, rows.mask.new_ones((len(rows), 1))], dim=-1)
            kwargs["attention_mask"] = rows.mask
        if self.position_ids:
            kwargs["position_ids"] = rows.positions[:, None]
        rows.cache, rows.pending = self._forward(**kwargs)
        rows.positions = rows.positions + 1

    def keep(self, rows: _Rows, keep: list[int]) -> _Rows:
        """The rows at ``keep`` (indices into the batch), with their caches."""
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        rows.cache.batch_select_indices(index)
        rows = _Rows([rows.prompts[k] for k in keep], rows.cache, rows.pending[index],
                     None if rows.mask is None else rows.mask[index],
                     None if rows.positions is None else rows.positions[index],
                     None if rows.encoder is None else BaseModelOutput(last_hidden_state=rows.encoder.last_hidden_state[index]),
                     None if rows.encoder_mask is None else rows.encoder_mask[index])
        if rows.mask is not None and self.takes_new_rows:
            first = int(rows.mask.any(0).int().argmax())  # columns before it are padding in every row left
            if first > 0:
                rows.cache = DynamicCache([(k[:, :, first:], v[:, :, first:]) for k, v, *_ in rows.cache])
                rows.mask = rows.mask[:, first:]
        return rows

    def join(self, a: _Rows, b: _Rows) -> _Rows:
        """One batch of the rows of ``a`` and ``b`` (decoder-only), caches left-padded to the longer one."""
        width = max(a.cache.get_seq_length(), b.cache.get_seq_length())
        masks, layers = [], []
        for rows in (a, b):
            extra = width - rows.cache.get_seq_length()
            mask = rows.mask if rows.mask is not None else torch.ones((len(rows), width - extra), dtype=torch.long,
                                                                       device=self.device)
            masks.append(torch.nn.functional.pad(mask, (extra, 0)))
            layers.append([(torch.nn.functional.pad(k, (0, 0, extra, 0)), torch.nn.functional.pad(v, (0, 0, extra, 0)))
                           for k, v, *_ in rows.cache])
        cache = DynamicCache([(torch.cat([ka, kb]), torch.cat([va, vb])) for (ka, va), (kb, vb) in zip(*layers)])
        return _Rows(a.prompts + b.prompts, cache, torch.cat([a.pending, b.pending]), torch.cat(masks),
                     torch.cat([a.positions, b.positions]))
