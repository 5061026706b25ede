"""Tokenise once (cached on disk), group by length, pad per batch.

The cache is a ``.npz`` of int32 arrays (read with ``allow_pickle=False``) named by a hash of the
tokenizer's identity, the model kind, the length limits and the examples.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridcl.constants import IGNORE_INDEX, KINDS
from hybridcl.data.tasks import Example, prompt_template
from hybridcl.errors import DataError, quote
from hybridcl.progress import progress_bar
from hybridcl.records.io import write_atomic

_CACHE_FORMAT = 2  # 2: seq2seq prompts name the language; long targets dropped or cut without eos
_CHUNK = 256  # texts per tokenizer call


@dataclass
class Encoded:
    """Token ids of a list of examples, in the same order.

    ``n_truncated_source`` / ``n_truncated_target``: examples whose prompt / target was cut at
    ``max_source_len`` / ``max_target_len`` tokens; ``n_dropped_target``: examples left out
    because their target was longer than ``max_target_len`` (``long_targets="drop"``).
    """

    input_ids: list[list[int]]
    labels: list[list[int]]
    n_truncated_source: int
    n_truncated_target: int
    n_dropped_target: int = 0  # examples left out: target longer than max_target_len, long_targets="drop"

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides the token ids: class, name, vocabulary, special tokens, a probe."""
    try:
        vocab = sorted(tokenizer.get_vocab().items())
    except (NotImplementedError, AttributeError):
        vocab = []
    probe = "def f(x):\n    return x  # héllo\tfunction g() { return 1; }"
    parts = {
        "class": type(tokenizer).__name__,
        "name": getattr(tokenizer, "name_or_path", ""),
        "vocab": hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest(),
        "special": {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())},
        "eos": tokenizer.eos_token_id,
        "bos": getattr(tokenizer, "bos_token_id", None),
        "probe": tokenizer(probe, add_special_tokens=True)["input_ids"],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def _cache_key(
    examples: Sequence[Example],
    tokenizer: Any,
    kind: str,
    max_source_len: int,
    max_target_len: int,
    long_targets: str,
    prompt: str = "named",
) -> str:
    h = hashlib.sha256()
    settings = [_CACHE_FORMAT, tokenizer_fingerprint(tokenizer), kind, max_source_len, max_target_len, long_targets]
    if prompt != "named":  # the named prompts' keys stay as they were
        settings.append(prompt)
    h.update(json.dumps(settings).encode("utf-8"))
    for e in examples:
        h.update(json.dumps([e.id, e.language, e.direction, e.source, e.target], ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()[:32]


def _tokenize(tokenizer: Any, texts: list[str], add_special_tokens: bool, desc: str, progress: bool) -> list[list[int]]:
    out: list[list[int]] = []
    bar = progress_bar(total=len(texts), desc=desc, unit="ex", enabled=progress and len(texts) >= 1000)
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start : start + _CHUNK]
        out.extend(list(ids) for ids in tokenizer(chunk, add_special_tokens=add_special_tokens)["input_ids"])
        bar.update(len(chunk))
    bar.close()
    return out


def target_lengths(examples: Sequence[Example], tokenizer: Any, kind: str) -> list[int]:
    """Each example's target length in tokens as :func:`encode` builds it, end-of-sequence included.

    seq2seq: the tokenised target with the tokenizer's special tokens (T5's closing ``</s>``);
    causal: the target's tokens plus the eos :func:`encode` appends. This is the number compared
    with ``max_target_len``.
    """
    if kind not in KINDS:
        raise DataError(f"unknown model kind {quote(kind)}: choose one of {', '.join(KINDS)}")
    texts = [e.target for e in examples]
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=kind == "seq2seq")["input_ids"]
    return [len(row) + (kind == "causal") for row in ids]


def target_length_counter(tokenizer: Any, kind: str):
    """:func:`target_lengths` bound to a tokenizer and model kind, for
    :func:`hybridcl.data.tasks.load_task_data`'s ``target_lengths``."""
    return lambda examples: target_lengths(examples, tokenizer, kind)


def _cut_keep_eos(ids: list[int], limit: int, eos: int | None) -> list[int]:
    if len(ids) <= limit:
        return ids
    if eos is not None and ids and ids[-1] == eos:
        return ids[: limit - 1] + [eos]
    return ids[:limit]


def encode(
    examples: Sequence[Example],
    tokenizer: Any,
    kind: str,
    max_source_len: int,
    max_target_len: int,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    long_targets: str = "drop",
    prompt: str = "named",
) -> Encoded:
    """Token ids and labels for ``examples``.

    seq2seq: ``input_ids`` = the tokenised prompt, cut to ``max_source_len`` keeping the
    tokenizer's final eos; ``labels`` = the tokenised target (with its eos). causal:
    ``input_ids`` = prompt + target + eos, ``labels`` = -100 on every prompt position, then target
    + eos; the prompt is cut to ``max_source_len`` inside the template, so the ``Code:`` /
    ``Description:`` cue stays.

    A target longer than ``max_target_len`` (eos included, :func:`target_lengths`): with
    ``long_targets="drop"`` the example is left out (``n_dropped_target``); with ``"cut"`` its
    first ``max_target_len`` tokens are kept and no eos, since a cut function does not end there
    (``n_truncated_target``). ``prompt``: ``data.prompt`` (``raw``: no template around the source).
    """
    if kind not in KINDS:
        raise DataError(f"unknown model kind {quote(kind)}: choose one of {', '.join(KINDS)}")
    if long_targets not in ("drop", "cut"):
        raise DataError(f"long_targets = {quote(long_targets)}: choose drop or cut (data.long_targets)")
    if max_source_len < 2 or max_target_len < 2:
        raise DataError(
            f"max_source_len = {max_source_len}, max_target_len = {max_target_len}: both must be at least 2 tokens"
        )
    eos = tokenizer.eos_token_id
    if kind == "causal" and eos is None:
        raise DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)} has no eos token; a "
            "causal model needs one to end targets"
        )
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(examples, tokenizer, kind, max_source_len, max_target_len, long_targets, prompt)
        cache_file = Path(cache_dir) / f"encoded-{kind}-{key}.npz"
        if cache_file.is_file():
            cached = _load_cache(cache_file)
            if cached is not None and len(cached) + cached.n_dropped_target == len(examples):
                return cached
    encoded = _encode(
        examples, tokenizer, kind, max_source_len, max_target_len, eos, progress, long_targets == "drop", prompt
    )
    if cache_file is not None:
        _save_cache(cache_file, encoded)
    return encoded


def encode_prompts(
    tokenizer: Any,
    sources: Sequence[str],
    languages: Sequence[str],
    direction: str,
    kind: str,
    max_source_len: int,
    *,
    progress: bool = False,
    prompt: str = "named",
) -> tuple[list[list[int]], list[bool]]:
    """The prompt's token ids for each source, as training and generation both read it, and whether each was cut.

    The language's template goes around the source (:func:`hybridcl.data.tasks.prompt_template`).
    seq2seq: cut on the right to ``max_source_len``, keeping the tokenizer's closing eos. causal: no
    closing eos (the model continues the prompt); a prompt that is too long is shortened inside the
    template, so it keeps its start (which names the language) and its cue (``Code:``).
    ``prompt="raw"`` (``data.prompt``): the source alone, cut on the right like the seed's tokenizer.
    """
    eos = tokenizer.eos_token_id
    prompts = []
    for source, language in zip(sources, languages, strict=True):
        prefix, suffix = prompt_template(language, direction, kind, prompt)
        prompts.append(f"{prefix}{source}{suffix}")
    out, cut = [], []
    for k, ids in enumerate(_tokenize(tokenizer, prompts, True, "tokenise prompts", progress)):
        if (
            kind == "causal" and eos is not None and len(ids) > 1 and ids[-1] == eos
        ):  # T5/ByT5-style tokenizers end every text with eos
            ids = ids[:-1]
        cut.append(len(ids) > max_source_len)
        if not cut[-1]:
            out.append(ids)
        elif kind == "seq2seq":
            out.append(_cut_keep_eos(ids, max_source_len, eos))
        elif prompt == "raw":  # no template to keep: the start, as truncation=True keeps it
            out.append(ids[:max_source_len])
        else:
            out.append(_cut_prompt(tokenizer, sources[k], languages[k], direction, ids, max_source_len, eos))
    return out, cut


def _encode(
    examples, tokenizer, kind, max_source_len, max_target_len, eos, progress, drop: bool, prompt: str = "named"
) -> Encoded:
    if not examples:
        return Encoded([], [], 0, 0)
    # a stage may mix tasks of several directions (joint, replay): each example gets its own template
    prompt_ids: list[list[int]] = [[] for _ in examples]
    prompt_cut = [False] * len(examples)
    for direction in dict.fromkeys(e.direction for e in examples):
        idx = [k for k, e in enumerate(examples) if e.direction == direction]
        ids, cut = encode_prompts(
            tokenizer,
            [examples[k].source for k in idx],
            [examples[k].language for k in idx],
            direction,
            kind,
            max_source_len,
            progress=progress,
            prompt=prompt,
        )
        for k, one_ids, one_cut in zip(idx, ids, cut, strict=True):
            prompt_ids[k], prompt_cut[k] = one_ids, one_cut
    targets = [e.target for e in examples]
    n_src = n_tgt = n_drop = 0
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    if kind == "seq2seq":
        for src, was_cut, tgt in zip(
            prompt_ids, prompt_cut, _tokenize(tokenizer, targets, True, "tokenise targets", progress), strict=True
        ):
            if len(tgt) > max_target_len:
                if drop:
                    n_drop += 1
                    continue
                n_tgt += 1
                tgt = tgt[:max_target_len]  # no eos: the function goes on after the cut
            n_src += was_cut
            input_ids.append(src)
            labels.append(tgt)
        return Encoded(input_ids, labels, n_src, n_tgt, n_drop)
    target_ids = _tokenize(tokenizer, targets, False, "tokenise targets", progress)
    for p, was_cut, t in zip(prompt_ids, prompt_cut, target_ids, strict=True):
        end = [eos]
        if len(t) + 1 > max_target_len:
            if drop:
                n_drop += 1
                continue
            n_tgt += 1
            t, end = t[:max_target_len], []  # no eos: the function goes on after the cut
        n_src += was_cut
        input_ids.append(p + t + end)
        labels.append([IGNORE_INDEX] * len(p) + t + end)
    return Encoded(input_ids, labels, n_src, n_tgt, n_drop)


def _cut_prompt(
    tokenizer: Any, source: str, language: str, direction: str, full: list[int], limit: int, eos: int | None
) -> list[int]:
    """Shorten the source inside the template so the prompt keeps its start and its cue."""
    prefix, suffix = prompt_template(language, direction, "causal")
    head = list(tokenizer(prefix, add_special_tokens=True)["input_ids"])
    if eos is not None and head and head[-1] == eos:
        head = head[:-1]
    tail = list(tokenizer(suffix, add_special_tokens=False)["input_ids"])
    body = list(tokenizer(source, add_special_tokens=False)["input_ids"])
    room = limit - len(head) - len(tail)
    if room <= 0:  # the limit is shorter than the template itself: keep the end, where the cue is
        return full[-limit:]
    return head + body[:room] + tail


def _save_cache(file: Path, encoded: Encoded) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)

    def flat(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        values = np.fromiter((v for r in rows for v in r), dtype=np.int32, count=int(offsets[-1]))
        return values, offsets

    ids, ids_off = flat(encoded.input_ids)
    lab, lab_off = flat(encoded.labels)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                input_ids=ids,
                input_offsets=ids_off,
                labels=lab,
                label_offsets=lab_off,
                truncated=np.array(
                    [encoded.n_truncated_source, encoded.n_truncated_target, encoded.n_dropped_target], dtype=np.int64
                ),
            )

    write_atomic(file, write)


def _load_cache(file: Path) -> Encoded | None:
    """The cached encoding, or None if the file is unreadable (it is then rebuilt)."""
    try:
        with np.load(file, allow_pickle=False) as z:
            ids, ids_off, lab, lab_off, trunc = (
                z[k] for k in ("input_ids", "input_offsets", "labels", "label_offsets", "truncated")
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # a truncated or foreign file
        return None
    rows = lambda values, offsets: [values[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]  # noqa: E731
    if len(trunc) != 3:  # another format: rebuilt
        return None
    return Encoded(rows(ids, ids_off), rows(lab, lab_off), int(trunc[0]), int(trunc[1]), int(trunc[2]))


def batch_indices(
    lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int, group_by_length: bool
) -> list[list[int]]:
    """Batches of example indices; every index appears exactly once.

    ``group_by_length`` with ``shuffle``: like Hugging Face's ``LengthGroupedSampler``: a random
    permutation cut into megabatches of ``50 * batch_size``, each sorted by length (longest
    first) and cut into batches; the batch holding the longest example comes first so that
    memory errors show at once. Without ``shuffle``: sorted by length, longest first (for
    evaluation). Deterministic given ``seed``.
    """
    if batch_size < 1:
        raise DataError(f"batch_size = {batch_size}: must be at least 1")
    n = len(lengths)
    order = np.random.default_rng(seed).permutation(n).tolist() if shuffle else list(range(n))
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if not shuffle:
        order = sorted(order, key=lambda i: -lengths[i])
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    mega = 50 * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, mega):
        group = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, *, left: bool = False, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to the longest sequence (``left``: at the start, where a decoder-only prompt
    ends where generation starts) and the attention mask (1 = a real token), on ``device``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


def collate(
    features: list[dict], pad_token_id: int, kind: str, *, mask_padding: bool = True
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest member (right padding; labels padded with -100).

    ``mask_padding=False`` pads the labels with ``pad_token_id`` instead, so padding positions are
    targets of the loss: the seed's ``labels=input_ids`` (``train.mask_padding_in_loss=false``).

    seq2seq: ``input_ids``, ``attention_mask`` (source length), ``labels`` (target length).
    causal: ``input_ids``, ``attention_mask``, ``labels``, all the same length.
    """
    if kind not in KINDS:
        raise DataError(f"unknown model kind {quote(kind)}: choose one of {', '.join(KINDS)}")
    if not features:
        raise DataError("collate got an empty batch: batches must hold at least one example")

    def pad(rows: list[list[int]], value: int, width: int) -> torch.Tensor:
        return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)

    ids = [f["input_ids"] for f in features]
    labels = [f["labels"] for f in features]
    width = max(len(r) for r in ids)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids], dtype=torch.long)
    label_width = max(len(r) for r in labels) if kind == "seq2seq" else width
    label_pad = IGNORE_INDEX if mask_padding else pad_token_id
    return {
        "input_ids": pad(ids, pad_token_id, width),
        "attention_mask": mask,
        "labels": pad(labels, label_pad, label_width),
    }
