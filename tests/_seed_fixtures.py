"""Offline stand-ins for the seed preset's inputs: a ``Salesforce/codet5-small`` folder and a CodeSearchNet release.

The ``seed`` preset reads ``Salesforce/codet5-small`` from the hub and the official CodeSearchNet
release from ``data.path``; neither can be downloaded here. These builders make local folders with
the same files, names and formats, from the corpus bundled with hybridcl, so that
``hybridcl run preset=reference model.name=FOLDER data.path=FOLDER`` runs the real code paths offline:

``build_codet5_small(dest)`` writes, like the hub repository:

- ``config.json``: the published config (``config/presets/model_configs/codet5-small.json``) with
  ``vocab_size`` set to the size of the tokenizer built here (see below);
- ``vocab.json``, ``merges.txt``: a byte-level BPE trained with the ``tokenizers`` library as
  CodeT5's own ``train_tokenizer.py`` does (``ByteLevelBPETokenizer``, special tokens ``<pad> <s>
  </s> <unk> <mask>`` at ids 0-4, ``min_frequency=3``), on the bundled corpus' code and docstrings,
  followed by ``<extra_id_99>`` ... ``<extra_id_0>`` as in T5 (``<extra_id_0>`` the last id);
- ``special_tokens_map.json``, ``tokenizer_config.json`` (``tokenizer_class: RobertaTokenizer``,
  ``model_max_length: 512``), ``added_tokens.json`` (empty: the sentinels are in ``vocab.json``);
- ``model.safetensors``: the weights, randomly initialised by ``T5ForConditionalGeneration`` at the
  published size (6+6 blocks, d_model 512), with one planted circuit, below.

Why a small vocabulary (4,000 BPE tokens + 100 sentinels, not 32,100): the corpus is too small for
32,000 merges, and keeping ``vocab_size: 32100`` with fewer tokens would let the model emit ids that
no token has, which the real model never does. Everything else in the config is the published value.

The planted circuit: a randomly initialised T5 with tied embeddings decodes ``<pad>`` forever
(each step's output is most similar to its input), so it would never reach ``</s>`` and an
end-to-end run could not show how generation ends. The first decoder block's feed-forward layer
is given a successor table over a few tokens (``<pad>`` -> ``<s>`` -> the tokens of ``SCRIPT`` ->
``</s>`` -> ``JUNK``) whose signal dominates the random weights, so the base model answers every
prompt with ``<s>`` SCRIPT ``</s>`` and then, if generation did not stop at ``</s>``, ``JUNK``. A
run whose predictions are exactly ``SCRIPT`` has started the decoder at ``<pad>``, dropped the
``<s>`` from the text, and stopped at ``</s>`` without writing it.

``build_codesearchnet(dest)`` writes ``<lang>/final/jsonl/{train,valid,test}/<lang>_<split>_<n>.jsonl.gz``
with the release's field names (``repo, path, func_name, original_string, language, code,
code_tokens, docstring, docstring_tokens, sha, url, partition``): train from the bundled train
split, valid and test from the bundled valid split divided by file (no file in both); the
shortest functions of each, so that small length limits cut nothing.

``build_hf_code_search_net(dest)`` writes the same records as the Hugging Face ``code_search_net``
dataset saved to json lines, which ``data.source=hf data.path=FOLDER`` reads without network.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import torch

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in CodeT5's train_tokenizer.py
N_SENTINELS = 100
BPE_VOCAB = 4000
SCRIPT = "def answer():\n    return 42"
JUNK = " JUNK"
_SIGNAL = 100.0  # norm of a planted token's embedding; random embedding rows have norm ~22.6 (N(0, 1) x 512)


def bundled_records(language: str, split: str) -> list:
    from hybridcl.data.readers import read_split

    return read_split("bundled", None, language, split)[0]


TINY = {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2}


def build_codet5_small(dest: Path, *, seed: int = 0, languages=("python", "javascript"), **config_overrides) -> Path:
    """Write a codet5-small-layout folder at ``dest`` (see the module docstring); returns ``dest``.

    ``config_overrides`` change the published config (e.g. ``**TINY``: the same files and tokenizer
    around a 2+2-block, d_model 64 model, ~0.4M parameters, for tests that need speed, not size).
    """
    from safetensors.torch import save_model
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoConfig, AutoTokenizer, T5ForConditionalGeneration

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    texts = [text for lang in languages for r in bundled_records(lang, "train") for text in (r.code, r.docstring)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=BPE_VOCAB, min_frequency=3, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    bpe.save_model(str(dest))  # vocab.json, merges.txt
    vocab = json.loads((dest / "vocab.json").read_text(encoding="utf-8"))
    n = len(vocab)
    sentinels = [f"<extra_id_{i}>" for i in range(N_SENTINELS)]
    vocab.update({token: n + N_SENTINELS - 1 - i for i, token in enumerate(sentinels)})
    _write_json(dest / "vocab.json", vocab)
    _write_json(dest / "added_tokens.json", {})
    mask = {"content": "<mask>", "single_word": False, "lstrip": True, "rstrip": False, "normalized": True}
    names = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
    }
    _write_json(dest / "special_tokens_map.json", {**names, "mask_token": mask, "additional_special_tokens": sentinels})
    _write_json(
        dest / "tokenizer_config.json",
        {
            "errors": "replace",
            **names,
            "mask_token": {**mask, "__type": "AddedToken"},
            "add_prefix_space": False,
            "trim_offsets": True,
            "model_max_length": 512,
            "additional_special_tokens": sentinels,
            "tokenizer_class": "RobertaTokenizer",
        },
    )
    published = json.loads(
        (resources.files("hybridcl.config") / "presets" / "model_configs" / "codet5-small.json").read_text()
    )
    _write_json(dest / "config.json", {**published, "vocab_size": len(vocab), **config_overrides})

    tokenizer = AutoTokenizer.from_pretrained(dest)
    config = AutoConfig.from_pretrained(dest)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
        plant_successors(model, _script_ids(tokenizer), seed)
    save_model(model, str(dest / "model.safetensors"), metadata={"format": "pt"})  # drops the tied copies
    return dest


def _script_ids(tokenizer) -> list[int]:
    """``<pad> <s>`` SCRIPT ``</s>`` JUNK as token ids; every id distinct, so each has one successor."""
    body = tokenizer(SCRIPT, add_special_tokens=False)["input_ids"]
    junk = tokenizer(JUNK, add_special_tokens=False)["input_ids"]
    chain = [tokenizer.pad_token_id, tokenizer.bos_token_id, *body, tokenizer.eos_token_id, *junk]
    assert len(set(chain)) == len(chain), f"SCRIPT and JUNK must tokenize to distinct tokens: {chain}"
    return chain


@torch.no_grad()
def plant_successors(model, chain: list[int], seed: int = 0) -> None:
    """Make decoder input ``chain[k]`` predict ``chain[k+1]`` in a T5 with ReLU feed-forwards (module docstring).

    Needs ``len(chain) <= d_model`` and distinct ids; the model then greedily writes ``chain[1:]``.

    Each chain token gets an embedding ``_SIGNAL * u_k`` on its own orthonormal direction ``u_k``.
    The first decoder block's feed-forward reads ``u_k`` (one hidden unit per token) and writes
    ``_SIGNAL * (u_{k+1} - u_k)``, so the residual stream leaves it as ``_SIGNAL * u_{k+1}`` plus the
    random layers' output, and the tied output head scores ``chain[k+1]`` far above every other token.
    """
    d = model.config.d_model
    generator = torch.Generator().manual_seed(seed)
    directions = torch.linalg.qr(torch.randn(d, len(chain), generator=generator))[0].T  # orthonormal rows
    model.shared.weight[chain] = _SIGNAL * directions
    ff = model.decoder.block[0].layer[-1].DenseReluDense
    units = list(range(len(chain) - 1))  # hidden unit k fires on chain[k]
    # The layer norm before the feed-forward turns _SIGNAL * u_k into ~sqrt(d) * u_k.
    ff.wi.weight[units] = directions[:-1]
    ff.wo.weight[:, units] = (_SIGNAL / d**0.5) * (directions[1:] - directions[:-1]).T


def build_codesearchnet(
    dest: Path, *, languages=("python", "javascript"), n_train: int = 48, n_eval: int = 16, train_shards: int = 2
) -> Path:
    """Write a CodeSearchNet-release-layout folder at ``dest`` (see the module docstring); returns ``dest``.

    ``n_train`` records per language in ``train`` (cut into ``train_shards`` files, as the release
    cuts its train split), at most ``n_eval`` in each of ``valid`` and ``test``: the functions with
    the shortest code (at most ~35 tokens of the codet5 stand-in's tokenizer for the defaults).
    """
    dest = Path(dest)
    for lang in languages:
        train = _shortest(bundled_records(lang, "train"), n_train)
        by_file: dict[str, list] = {}
        for r in bundled_records(lang, "valid"):
            by_file.setdefault(r.path, []).append(r)
        valid, test = [], []
        for i, path in enumerate(sorted(by_file)):  # alternate whole files between valid and test
            (valid if i % 2 == 0 else test).extend(by_file[path])
        size = -(-len(train) // train_shards)
        shards = {
            "train": [train[i : i + size] for i in range(0, len(train), size)],
            "valid": [_shortest(valid, n_eval)],
            "test": [_shortest(test, n_eval)],
        }
        for split, parts in shards.items():
            folder = dest / lang / "final" / "jsonl" / split
            folder.mkdir(parents=True, exist_ok=True)
            for n, part in enumerate(parts):
                with gzip.open(folder / f"{lang}_{split}_{n}.jsonl.gz", "wt", encoding="utf-8") as handle:
                    for r in part:
                        handle.write(json.dumps(csn_row(r, split), ensure_ascii=False) + "\n")
    return dest


def build_hf_code_search_net(dest: Path, *, languages=("python", "javascript"), **sizes) -> Path:
    """The same records as :func:`build_codesearchnet`, as the Hugging Face ``code_search_net`` dataset
    saved to json lines (``Dataset.to_json``): ``<lang>/{train,validation,test}-0000N-of-0000M.jsonl.gz``
    with the dataset's columns, the form ``data.source=hf data.path=FOLDER`` reads offline."""
    dest = Path(dest)
    release = build_codesearchnet(dest / ".release", languages=languages, **sizes)
    for lang in languages:
        (dest / lang).mkdir(parents=True, exist_ok=True)
        for split, hf_split in (("train", "train"), ("valid", "validation"), ("test", "test")):
            files = sorted(
                (release / lang / "final" / "jsonl" / split).glob("*.jsonl.gz"),
                key=lambda f: int(f.name.rsplit("_", 1)[1].split(".")[0]),
            )
            for n, file in enumerate(files):
                with (
                    gzip.open(file, "rt", encoding="utf-8") as src,
                    gzip.open(
                        dest / lang / f"{hf_split}-{n:05d}-of-{len(files):05d}.jsonl.gz", "wt", encoding="utf-8"
                    ) as out,
                ):
                    for line in src:
                        out.write(json.dumps(hf_row(json.loads(line), hf_split), ensure_ascii=False) + "\n")
    return dest


def hf_row(row: dict, split_name: str) -> dict:
    """A release row (:func:`csn_row`) with the Hugging Face dataset's column names."""
    return {
        "repository_name": row["repo"],
        "func_path_in_repository": row["path"],
        "func_name": row["func_name"],
        "whole_func_string": row["original_string"],
        "language": row["language"],
        "func_code_string": row["code"],
        "func_code_tokens": row["code_tokens"],
        "func_documentation_string": row["docstring"],
        "func_documentation_tokens": row["docstring_tokens"],
        "split_name": split_name,
        "func_code_url": row["url"],
    }


def _shortest(records: list, n: int) -> list:
    """The ``n`` records with the shortest code, in file order: tests run at short length limits
    and nothing is cut (a cut target is dropped or trained without its end)."""
    keep = set(sorted(range(len(records)), key=lambda i: len(records[i].code))[:n])
    return [r for i, r in enumerate(records) if i in keep]


_TOKEN = re.compile(r"\w+|[^\w\s]")


def csn_row(record, partition: str) -> dict:
    """One line of the CodeSearchNet release for ``record``.

    ``code_tokens`` / ``docstring_tokens`` are split on words and punctuation here (the release used
    tree-sitter tokens); hybridcl does not read them.
    """
    sha = hashlib.sha1(f"{record.repo}\n{record.path}".encode()).hexdigest()
    return {
        "repo": record.repo,
        "path": record.path,
        "func_name": record.func_name,
        "original_string": record.code,
        "language": record.language,
        "code": record.code,
        "code_tokens": _TOKEN.findall(record.code),
        "docstring": record.docstring,
        "docstring_tokens": _TOKEN.findall(record.docstring),
        "sha": sha,
        "url": record.url or f"https://github.com/{record.repo}/blob/{sha}/{record.path}",
        "partition": partition,
    }


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
