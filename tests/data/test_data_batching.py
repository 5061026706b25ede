import pytest
import torch
from transformers import ByT5Tokenizer

from hybridcl.data import batching
from hybridcl.data.batching import batch_indices, collate, encode
from hybridcl.data.tasks import Example, format_prompt
from hybridcl.errors import DataError

TOK = ByT5Tokenizer()  # ids = utf-8 byte + 3, pad 0, eos 1


def ex(source, target, i=0, direction="text-to-code"):
    return Example(f"python/x::{i}", "python", direction, source, target)


def test_seq2seq_source_truncation_keeps_eos_and_long_targets_are_dropped():
    enc = encode([ex("abcdef", "xy"), ex("ab", "longtarget", 1)], TOK, "seq2seq", 4, 5, progress=False)
    assert enc.input_ids == [[74, 104, 113, 1]]  # "Gen" of "Generate Python: abcdef" + eos
    assert enc.labels == [[123, 124, 1]]
    assert (enc.n_truncated_source, enc.n_truncated_target, enc.n_dropped_target) == (1, 0, 1)


def test_long_targets_cut_end_without_eos():
    """issue 11 #4: a cut target that still ended in eos taught the model to stop mid-function."""
    enc = encode([ex("ab", "xy"), ex("ab", "longtarget", 1)], TOK, "seq2seq", 64, 5, progress=False, long_targets="cut")
    assert enc.labels == [[123, 124, 1], [b + 3 for b in b"longt"]]
    assert (enc.n_truncated_target, enc.n_dropped_target) == (1, 0)
    enc = encode([ex("ab", "xy"), ex("ab", "longtarget", 1)], TOK, "causal", 64, 5, progress=False, long_targets="cut")
    assert enc.labels[0][-3:] == enc.input_ids[0][-3:] == [123, 124, 1]  # target + eos
    assert enc.labels[1][-5:] == enc.input_ids[1][-5:] == [b + 3 for b in b"longt"]  # cut, no eos
    assert (enc.n_truncated_target, enc.n_dropped_target) == (1, 0)
    dropped = encode([ex("ab", "xy"), ex("ab", "longtarget", 1)], TOK, "causal", 64, 5, progress=False)
    assert dropped.input_ids == enc.input_ids[:1] and (dropped.n_truncated_target, dropped.n_dropped_target) == (0, 1)
    assert batching.target_lengths([ex("ab", "xy"), ex("ab", "longtarget")], TOK, "causal") == [3, 11]
    assert batching.target_lengths([ex("ab", "xy"), ex("ab", "longtarget")], TOK, "seq2seq") == [3, 11]


def test_causal_labels_mask_the_prompt_exactly():
    e = ex("Add two numbers.", "def add(a, b):\n    return a + b")
    enc = encode([e], TOK, "causal", 512, 512, progress=False)
    prompt = format_prompt(e.source, "python", e.direction, "causal")
    n = len(prompt.encode())
    ids, labels = enc.input_ids[0], enc.labels[0]
    assert len(ids) == n + len(e.target) + 1 and ids[-1] == 1
    assert labels[:n] == [-100] * n and labels[n:] == ids[n:]
    assert (enc.n_truncated_source, enc.n_truncated_target) == (0, 0)


def test_causal_truncation_keeps_template_cue():
    e = ex("x" * 100, "y" * 50)
    enc = encode([e, ex("short doc", "z", 1)], TOK, "causal", 60, 20, progress=False, long_targets="cut")
    ids, labels = enc.input_ids[0], enc.labels[0]
    prompt_len = labels.count(-100)
    assert prompt_len == 60 and len(ids) == 60 + 20
    assert bytes(i - 3 for i in ids[:prompt_len]).decode().endswith("xxx\nCode:\n")
    assert labels[60:] == [ord("y") + 3] * 20
    assert (enc.n_truncated_source, enc.n_truncated_target) == (1, 1)


def test_cache_is_used_and_keyed(tmp_path, monkeypatch):
    examples = [ex(f"doc {i}", f"code {i}", i) for i in range(5)]
    first = encode(examples, TOK, "causal", 64, 64, cache_dir=tmp_path, progress=False)
    (cached,) = list(tmp_path.iterdir())
    assert cached.suffix == ".npz"
    monkeypatch.setattr(batching, "_encode", lambda *a, **k: pytest.fail("cache not used"))
    assert encode(examples, TOK, "causal", 64, 64, cache_dir=tmp_path, progress=False) == first
    monkeypatch.undo()
    encode(examples, TOK, "causal", 32, 64, cache_dir=tmp_path, progress=False)
    encode(examples[:4], TOK, "causal", 64, 64, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("group", [False, True])
def test_batch_indices_cover_every_index_once(shuffle, group):
    lengths = [(i * 37) % 101 for i in range(1003)]
    batches = batch_indices(lengths, 8, shuffle, 3, group)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1003))
    assert all(len(b) == 8 for b in batches[:-1]) or group
    assert batches == batch_indices(lengths, 8, shuffle, 3, group)
    if group:
        assert max(lengths[i] for i in batches[0]) == max(lengths)
    if group and not shuffle:
        assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    if shuffle:
        assert batches != batch_indices(lengths, 8, shuffle, 4, group)


def test_grouped_batches_have_similar_lengths():
    lengths = list(range(400))
    batches = batch_indices(lengths, 4, True, 0, True)
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) < 20 for b in batches)


def test_collate_pads_dynamically():
    feats = [{"input_ids": [5, 6, 7], "labels": [8, 1]}, {"input_ids": [5], "labels": [9, 9, 9, 1]}]
    s = collate(feats, 0, "seq2seq")
    assert s["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert s["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert s["labels"].tolist() == [[8, 1, -100, -100], [9, 9, 9, 1]]
    c = collate(
        [{"input_ids": [5, 6, 1], "labels": [-100, 6, 1]}, {"input_ids": [5, 1], "labels": [-100, 1]}], 0, "causal"
    )
    assert c["input_ids"].tolist() == [[5, 6, 1], [5, 1, 0]] and c["labels"].tolist() == [[-100, 6, 1], [-100, 1, -100]]
    assert c["attention_mask"].dtype == torch.long
    with pytest.raises(DataError):
        collate(feats, 0, "encoder")


def test_seq2seq_inputs_carry_the_language():
    py = encode([ex("ab", "xy")], TOK, "seq2seq", 512, 512, progress=False)
    js = encode(
        [Example("javascript/x::0", "javascript", "text-to-code", "ab", "xy")], TOK, "seq2seq", 512, 512, progress=False
    )
    assert py.input_ids == [[b + 3 for b in b"Generate Python: ab"] + [1]]
    assert js.input_ids == [[b + 3 for b in b"Generate JavaScript: ab"] + [1]]
