"""Greedy decoding whose batch sheds finished rows and, for decoder-only models, takes in waiting prompts.

``model.generate`` runs a batch until its last row ends: a row that stopped at EOS or at the end of
its function (:mod:`hybridcl.evaluation.stopping`) is fed padding until then, and the next batch
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

The row that runs longest is often one that repeats itself (a loop of the same lines until the
token limit), and once the others have ended it runs alone, one forward pass per token, each pass
reading all the weights. While a batch is small (:data:`DRAFT_BUDGET`), each row's next tokens
are drafted from its own text (prompt lookup: what followed the last two tokens where they
occurred before, transformers' ``PromptLookupCandidateGenerator``) and checked in the same pass:
the model's choice after each drafted token is computed, the drafted tokens it agrees with are
kept with the one it chose after them, and the cache entries of the rest are masked out of the
row (dropped from the cache once they are half of it). The kept tokens are those one-at-a-time
decoding chooses: each is the argmax given the tokens before it.

Encoder-decoder models (T5, BART) shed finished rows but take in no new ones: the decoder's
positions come from the cache length, shared by the whole batch, so a late row cannot be padded
into it. Decoder-only caches other than plain ``DynamicLayer`` ones (sliding windows, linear
attention) and models whose forward takes no ``position_ids`` shed rows without taking in new
ones or drafting, for the same reason.

The outputs are the token ids ``generate`` chooses for each prompt, up to float rounding: a row's
logits depend in the last bits on the batch it is computed in (the matrix-product kernels differ
with the number of rows; measured 6e-5 on SmolLM2-135M logits between a row alone and in a batch
of four, 5e-5 between five tokens in one pass and one at a time), which ``generate`` itself shows
between two batch sizes. Greedy outputs change only where two tokens' logits are that close: the
benchmark counts identical outputs.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.generation import PromptLookupCandidateGenerator
from transformers.modeling_outputs import BaseModelOutput

from hybridcl.data.batching import pad_batch

__all__ = ["greedy_generate", "forward_parameters", "supports_fast_greedy", "decoder_start_token_id", "DRAFT_BUDGET"]

# Token rows one forward pass may hold when drafted tokens are checked: with 8, a lone row checks 7
# drafted tokens per pass, two rows 3 each, and batches of more than 4 rows draft nothing. Measured
# on one core (benchmarks/README.md): a pass of SmolLM2-135M costs about 38 ms whatever its rows
# plus 5.7 ms per token row, and on the default preset's workload 8 used less CPU than 0 (no
# drafts) and 16 (drafts in full batches: fewer passes, more token rows).
DRAFT_BUDGET = 8

# generation_config keys that leave greedy decoding as it is: token ids, bookkeeping, and the keys that
# hybridcl's generate call sets itself (sampling off, one beam, max_new_tokens). Any other key (a
# repetition penalty, forced or suppressed tokens, a minimum length...) adds a logits processor to
# generate: then generate runs, not this loop.
_NEUTRAL_KEYS = {
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "_from_model_config",
    "transformers_version",
    "max_length",
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "num_beams",
    "early_stopping",
    "num_return_sequences",
}


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


def supports_fast_greedy(model, encoder_decoder: bool) -> bool:
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
    draft_budget: int | None = None,
) -> list[list[int]]:
    """The greedy continuation of each prompt (token ids), in the order of ``prompts``.

    ``prompts``: token ids, generated in the order given (sort them by length first: rows of
    similar length waste less padding). At most ``batch_size`` rows are in flight. Each output
    holds at most ``max_new_tokens`` tokens and stops after EOS (included) or where ``ended``
    says its text has ended (``ended`` gets the token ids of the rows still open after a token
    and returns a flag for each; the ending token is included). ``on_finished(k)`` is called
    when prompt ``k`` is done. ``draft_budget``: token rows a forward pass may hold when it
    checks drafted tokens (default :data:`DRAFT_BUDGET`; 0: no drafts). The model runs in the
    caller's grad mode (use ``torch.inference_mode``). Use it where :func:`supports_fast_greedy` holds.
    """
    decoder = _Decoder(model, encoder_decoder, pad_token_id, decoder_start_token_id(model) if encoder_decoder else None)
    budget = DRAFT_BUDGET if draft_budget is None else draft_budget
    outputs: list[list[int]] = [[] for _ in prompts]
    waiting = deque(range(len(prompts)))
    rows: _Rows | None = None
    while waiting or rows is not None:
        free = batch_size - (len(rows) if rows is not None else 0)
        if waiting and free > 0 and (rows is None or decoder.flexible):
            new = decoder.start([waiting.popleft() for _ in range(min(free, len(waiting)))], prompts)
            tokens = [[t] for t in new.pending.tolist()]
            new = _record(new, tokens, decoder, outputs, max_new_tokens, eos_token_id, ended, on_finished)
            rows = new if rows is None else (decoder.join(rows, new) if new is not None else rows)
            continue  # the joined rows' pending tokens are fed together, at the next step
        drafts = None
        size = budget // len(rows) - 1  # drafted tokens per row that keep the pass within the budget
        if decoder.flexible and size > 0:
            drafts = [
                _draft(list(prompts[k]) + outputs[k], min(size, max_new_tokens - len(outputs[k]) - 1), eos_token_id)
                for k in rows.prompts
            ]
        rows = _record(
            rows, decoder.step(rows, drafts), decoder, outputs, max_new_tokens, eos_token_id, ended, on_finished
        )
    return outputs


def _draft(context: list[int], size: int, eos: int | None) -> list[int]:
    """Up to ``size`` tokens that followed the context's last tokens where they occurred before
    (prompt lookup: transformers' ``PromptLookupCandidateGenerator``, its 2- then 1-token match)."""
    if size <= 0:
        return []
    lookup = PromptLookupCandidateGenerator(
        eos_token_id=None if eos is None else torch.tensor([eos]),
        num_output_tokens=size,
        max_length=len(context) + size + 1,
    )
    candidates, _ = lookup.get_candidates(torch.tensor([context]))
    return candidates[0, len(context) :].tolist()


def _record(
    rows: _Rows, tokens: list[list[int]], decoder: _Decoder, outputs, max_new_tokens, eos, ended, on_finished
) -> _Rows | None:
    """Append each row's chosen ``tokens`` to its output, one at a time, until the output ends (EOS,
    ``max_new_tokens``, ``ended``); drop the rows that ended (None: all of them)."""
    done = [False] * len(rows)
    for j in range(max(map(len, tokens))):
        now = [k for k in range(len(rows)) if not done[k] and j < len(tokens[k])]
        for k in now:
            output = outputs[rows.prompts[k]]
            output.append(tokens[k][j])
            done[k] = tokens[k][j] == eos or len(output) >= max_new_tokens
        if ended is not None:
            open_ = [k for k in now if not done[k]]
            for k, flag in zip(open_, ended([outputs[rows.prompts[k]] for k in open_]), strict=True):
                done[k] = flag
    if not any(done):
        return rows
    if on_finished is not None:
        for prompt, d in zip(rows.prompts, done, strict=True):
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
        # set by the first prefill, once the cache's layer types are known: rows may join, and a row's
        # cache may hold entries of rejected drafts (masked), when positions and masks are per row
        self.flexible = False

    def _forward(self, keep: int = 1, **kwargs):
        if self.logits_to_keep:
            kwargs["logits_to_keep"] = keep
        out = self.model(**kwargs, use_cache=True, return_dict=True)
        # as generate: the float32 logits of the last position(s), argmax (the first of equal maxima)
        return out.cache, out.logits[:, -keep:].to(dtype=torch.float32).argmax(-1)

    def start(self, group: list[int], prompts) -> _Rows:
        """Encode/prefill the prompts in ``group``; their first tokens become pending."""
        seqs = [prompts[k] for k in group]
        ids, mask = pad_batch(seqs, self.pad, left=not self.encoder_decoder, device=self.device)
        if self.encoder_decoder:
            encoder = self.model.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True)
            start = torch.full((len(seqs), 1), self.decoder_start, dtype=torch.long, device=self.device)
            cache, pending = self._forward(encoder_outputs=encoder, attention_mask=mask, decoder_input_ids=start)
            pending = pending[:, 0]
            return _Rows(group, cache, pending, None, None, encoder, mask)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        kwargs = {"input_ids": ids}
        padded = not bool(mask.all())
        if padded:  # generate drops an all-ones mask (SDPA's causal path); so does this
            kwargs["attention_mask"] = mask
        if self.position_ids:
            kwargs["position_ids"] = positions
        cache, pending = self._forward(**kwargs)
        pending = pending[:, 0]
        self.flexible = self.position_ids and all(type(layer) is DynamicLayer for layer in cache.layers)
        return _Rows(group, cache, pending, mask if padded else None, positions[:, -1] + 1)

    def step(self, rows: _Rows, drafts: list[list[int]] | None = None) -> list[list[int]]:
        """Feed every row's pending token (and its drafted tokens); returns the tokens each row chose:
        one, or with a draft the draft's tokens the model agrees with and the one after them."""
        if self.encoder_decoder:
            rows.cache, chosen = self._forward(
                encoder_outputs=rows.encoder,
                attention_mask=rows.encoder_mask,
                decoder_input_ids=rows.pending[:, None],
                cache=rows.cache,
            )
            rows.pending = chosen[:, 0]
            return [[t] for t in rows.pending.tolist()]
        drafts = drafts or [[] for _ in rows.prompts]
        width = 1 + max(map(len, drafts))
        token = torch.full((len(rows), width), self.pad, dtype=torch.long)
        fed = torch.zeros((len(rows), width), dtype=torch.long)  # 1 = the pending token or a drafted one
        for r, draft in enumerate(drafts):
            token[r, 1 : 1 + len(draft)] = torch.tensor(draft, dtype=torch.long)
            fed[r, : 1 + len(draft)] = 1
        token[:, 0] = rows.pending
        token, fed = token.to(self.device), fed.to(self.device)
        kwargs = {"input_ids": token, "cache": rows.cache}
        if rows.mask is not None or width > 1:
            known = rows.cache.get_seq_length()
            mask = rows.mask if rows.mask is not None else fed.new_ones((len(rows), known))
            rows.mask = torch.cat([mask, fed], dim=-1)
            kwargs["attention_mask"] = rows.mask
        if self.position_ids:
            kwargs["position_ids"] = rows.positions[:, None] + torch.arange(width, device=self.device)
        rows.cache, chosen = self._forward(keep=width, **kwargs)
        chosen = chosen.tolist()
        tokens = []
        for r, draft in enumerate(drafts):
            agreed = next((j for j, t in enumerate(draft) if chosen[r][j] != t), len(draft))
            tokens.append(chosen[r][: agreed + 1])
            if agreed < len(draft):  # the cache entries of the drafted tokens after the first disagreement
                rows.mask[r, rows.mask.shape[1] - width + 1 + agreed :] = 0
        rows.pending = torch.tensor([t[-1] for t in tokens], dtype=torch.long, device=self.device)
        rows.positions = rows.positions + torch.tensor([len(t) for t in tokens], device=self.device)
        if width > 1:
            self._compact(rows)
        return tokens

    def _compact(self, rows: _Rows) -> None:
        """Drop the cache entries of rejected drafts once they make up half of the cache."""
        counts = rows.mask.sum(1)
        width = int(counts.max())
        if 2 * width > rows.mask.shape[1]:
            return
        order = torch.sort(rows.mask, dim=1, stable=True).indices[
            :, -width:
        ]  # each row's entries, in order, left-padded
        rows.mask = rows.mask.gather(1, order)
        index = order[:, None, :, None]
        rows.cache = _rebuilt(rows.cache, lambda t: t.gather(2, index.expand(-1, t.shape[1], -1, t.shape[3])))

    def keep(self, rows: _Rows, keep: list[int]) -> _Rows:
        """The rows at ``keep`` (indices into the batch), with their caches."""
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        rows.cache.batch_select_indices(index)
        rows = _Rows(
            [rows.prompts[k] for k in keep],
            rows.cache,
            rows.pending[index],
            None if rows.mask is None else rows.mask[index],
            None if rows.positions is None else rows.positions[index],
            None if rows.encoder is None else BaseModelOutput(last_hidden_state=rows.encoder.last_hidden_state[index]),
            None if rows.encoder_mask is None else rows.encoder_mask[index],
        )
        if rows.mask is not None and self.flexible:
            first = int(rows.mask.any(0).int().argmax())  # columns before it are padding in every row left
            if first > 0:
                rows.cache = _rebuilt(rows.cache, lambda t: t[:, :, first:])
                rows.mask = rows.mask[:, first:]
        return rows

    def join(self, a: _Rows, b: _Rows) -> _Rows:
        """One batch of the rows of ``a`` and ``b`` (decoder-only), caches left-padded to the longer one."""
        width = max(a.cache.get_seq_length(), b.cache.get_seq_length())
        masks, layers = [], []
        for rows in (a, b):
            extra = width - rows.cache.get_seq_length()
            mask = (
                rows.mask
                if rows.mask is not None
                else torch.ones((len(rows), width - extra), dtype=torch.long, device=self.device)
            )
            masks.append(torch.nn.functional.pad(mask, (extra, 0)))
            layers.append(_edited(rows.cache, lambda t, extra=extra: torch.nn.functional.pad(t, (0, 0, extra, 0))))
        cache = DynamicCache(
            [
                (None, None) if ka is None else (torch.cat([ka, kb]), torch.cat([va, vb]))
                for (ka, va), (kb, vb) in zip(*layers, strict=True)
            ]
        )
        return _Rows(
            a.prompts + b.prompts,
            cache,
            torch.cat([a.pending, b.pending]),
            torch.cat(masks),
            torch.cat([a.positions, b.positions]),
        )


def _edited(cache: DynamicCache, edit: Callable[[torch.Tensor], torch.Tensor]) -> list[tuple]:
    """``(keys, values)`` of every layer of ``cache`` with ``edit`` applied. A layer that no forward
    filled (a full layer routed off, as in row 0 of the matrix: its keys are None) stays
    ``(None, None)``, at its index, so that the layers after it keep theirs."""
    return [(None, None) if k is None else (edit(k), edit(v)) for k, v, *_ in cache]


def _rebuilt(cache: DynamicCache, edit: Callable[[torch.Tensor], torch.Tensor]) -> DynamicCache:
    """A ``DynamicCache`` of :func:`_edited`'s layers."""
    return DynamicCache(_edited(cache, edit))
