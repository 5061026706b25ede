"""``preset=reference`` end to end, offline, on stand-ins for Salesforce/codet5-small and CodeSearchNet.

The stand-ins (tests/_seed_fixtures.py, fixtures in conftest.py) have the real files and formats:
the published config, a RobertaTokenizer's vocab.json / merges.txt / special-tokens files, weights
in safetensors, and the release's ``<lang>/final/jsonl/<split>/*.jsonl.gz`` layout. What the seed's
model does that the tests' tiny models do not: a RobertaTokenizer that wraps every text in
``<s> ... </s>``, ``</s>`` = 2 (not 1), a decoder that starts at ``<pad>`` = 0, 100 sentinel
special tokens, and a hub folder that ships a pickle checkpoint beside the safetensors one.
"""

import json
import pickle

import pytest
import torch
from _seed_fixtures import JUNK, SCRIPT

from hybridcl.cli import main
from hybridcl.config.experiment import ModelConfig, load_config
from hybridcl.model.loading import load_base

# The hub's Salesforce/codet5-small, less README.md and the pickle / Flax checkpoints.
HUB_FILES = {
    "config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "added_tokens.json",
    "model.safetensors",
}
PUBLISHED = load_config(overrides=["preset=reference"]).model.name


def test_the_stand_in_is_codet5_small_file_for_file(codet5_small_dir):
    assert {p.name for p in codet5_small_dir.iterdir()} == HUB_FILES
    config = json.loads((codet5_small_dir / "config.json").read_text())
    from importlib import resources

    published = json.loads(
        (resources.files("hybridcl.config") / "presets" / "model_configs" / "codet5-small.json").read_text()
    )
    assert {k: v for k, v in config.items() if k != "vocab_size"} == {
        k: v for k, v in published.items() if k != "vocab_size"
    }
    assert PUBLISHED == "Salesforce/codet5-small" and config["vocab_size"] == 4100  # 4,000 BPE tokens + 100 sentinels

    base = load_base(ModelConfig(name=str(codet5_small_dir)))
    tok, model = base.tokenizer, base.model
    assert type(tok).__name__ == "RobertaTokenizer" and base.kind == "seq2seq"
    assert [tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token, tok.mask_token] == [
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
        "<mask>",
    ]
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert (
        model.config.pad_token_id,
        model.config.bos_token_id,
        model.config.eos_token_id,
        model.config.decoder_start_token_id,
    ) == (0, 1, 2, 0)
    assert (model.generation_config.decoder_start_token_id, model.generation_config.eos_token_id) == (0, 2)
    assert len(tok) == model.config.vocab_size == 4100
    assert tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [4099, 4000]
    assert sum(p.numel() for p in model.parameters()) == 46_156_288  # 60,492,288 with the published 32,100 tokens

    ids = tok("def add(a, b):\n    return a + b <extra_id_0>")["input_ids"]
    assert ids[0] == 1 and ids[-2:] == [4099, 2]  # <s> ... <extra_id_0> </s>: a sentinel is one token
    assert tok.decode(ids, skip_special_tokens=True) == "def add(a, b):\n    return a + b "

    # Training builds decoder inputs from the labels: <pad> first. The stand-in decodes <s> SCRIPT </s>
    # whatever the input, so teacher forcing SCRIPT from <pad> costs almost nothing and from <s> a lot.
    labels = torch.tensor([tok(SCRIPT)["input_ids"]])
    decoder_ids = model.prepare_decoder_input_ids_from_labels(labels)
    assert decoder_ids[0, :2].tolist() == [0, 1]
    source = tok(["Return the answer."], return_tensors="pt")
    with torch.no_grad():
        right, wrong = (
            torch.nn.functional.cross_entropy(
                model(**source, decoder_input_ids=d).logits[0], labels[0], reduction="none"
            )
            for d in (decoder_ids, decoder_ids.clamp(min=1))
        )
    assert right.max() < 0.01 and wrong[0] > 50 and wrong[1:].max() < 0.01  # only <s>, the first target, is missed


def _hub_mirror(stand_in, folder, marker):
    """The stand-in's files (linked) plus a pytorch_model.bin whose unpickling would create ``marker``."""
    folder.mkdir()
    for file in stand_in.iterdir():
        (folder / file.name).symlink_to(file)

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    return folder


def test_preset_seed_runs_end_to_end(codet5_small_dir, codesearchnet_dir, tmp_path, capsys):
    marker = tmp_path / "unpickled"
    hub = _hub_mirror(codet5_small_dir, tmp_path / "codet5-small", marker)
    rc = main(
        [
            "run",
            "preset=reference",
            f"model.name={hub}",
            f"data.path={codesearchnet_dir}",
            "data.max_train=8",
            "data.max_val=3",
            "data.max_source_len=96",
            "data.max_target_len=64",
            "train.max_steps=2",
            "train.batch_size=4",
            "eval.max_examples=3",
            "eval.batch_size=4",
            "run.device=cpu",
            f"run.output_dir={tmp_path}",
            "run.name=seed",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert not marker.exists()  # the pickle beside the safetensors weights was never unpickled
    run = tmp_path / "seed"
    results = json.loads((run / "results.json").read_text())
    assert results["rows"] == ["base", "python", "javascript"] and results["strategy"] == "hybrid_shared_layer"
    assert results["params"]["lora_per_adapter"] == 1_671_168 and results["params"]["full_layer_per_block"] == 3_146_752
    data = results["per_seed"][0]["data"]
    assert [f["path"].rsplit("/", 1)[1] for f in data["python"]["train"]["files"]] == [
        "python_train_0.jsonl.gz",
        "python_train_1.jsonl.gz",
    ]
    assert data["javascript"]["valid"]["files"][0]["path"].endswith(
        "javascript/final/jsonl/valid/javascript_valid_0.jsonl.gz"
    )
    for stage in results["per_seed"][0]["train"]:
        assert stage["n_examples"] == 8 and stage["n_truncated_target"] == 0 and stage["final_loss"] > 0
    # The decoder started at <pad>, <s> was dropped from the text, generation stopped at </s> (not
    # written) and did not go on to JUNK: every prediction of every row is exactly SCRIPT.
    for row in range(3):
        for task in ("python", "javascript"):
            lines = (run / "seed-0" / "predictions" / f"row{row}-{task}.jsonl").read_text().splitlines()
            assert [json.loads(line)["prediction"] for line in lines] == [SCRIPT] * 3
    assert JUNK.strip() not in (run / "seed-0" / "predictions" / "row0-python.jsonl").read_text()
    syntax = [[cell["mean"] for cell in row] for row in results["matrix"]["syntax_pass"]]
    assert syntax == [[100.0, 0.0]] * 3  # SCRIPT is valid Python and not JavaScript

    capsys.readouterr()
    assert main(["generate", "--run", str(run), "--task", "python", "--json", "Return the answer."]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == SCRIPT


def test_allow_pickle_still_prefers_safetensors(codet5_small_dir, tmp_path):
    marker = tmp_path / "unpickled"
    hub = _hub_mirror(codet5_small_dir, tmp_path / "codet5-small", marker)
    base = load_base(ModelConfig(name=str(hub), allow_pickle=True))
    assert not marker.exists() and base.model.config.vocab_size == 4100


def test_a_hub_folder_with_only_the_pickle_is_refused(codet5_small_dir, tmp_path, capsys):
    marker = tmp_path / "unpickled"
    hub = _hub_mirror(codet5_small_dir, tmp_path / "codet5-small", marker)
    (hub / "model.safetensors").unlink()
    rc = main(
        [
            "run",
            "preset=reference",
            f"model.name={hub}",
            "data.source=bundled",
            f"run.output_dir={tmp_path}",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "only a pickle checkpoint" in err and "model.allow_pickle=true" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_the_codesearchnet_stand_in_has_the_release_fields(codesearchnet_dir, split):
    import gzip

    from hybridcl.data.readers import read_split

    for lang in ("python", "javascript"):
        files = sorted((codesearchnet_dir / lang / "final" / "jsonl" / split).glob("*.jsonl.gz"))
        rows = [json.loads(line) for f in files for line in gzip.open(f, "rt", encoding="utf-8")]
        assert set(rows[0]) == {
            "repo",
            "path",
            "func_name",
            "original_string",
            "language",
            "code",
            "code_tokens",
            "docstring",
            "docstring_tokens",
            "sha",
            "url",
            "partition",
        }
        assert {r["partition"] for r in rows} == {split} and {r["language"] for r in rows} == {lang}
        records, _ = read_split("codesearchnet", str(codesearchnet_dir), lang, split)
        assert [r.code for r in records] == [r["code"] for r in rows] and len(records) == (
            48 if split == "train" else 16
        )
    valid = {
        json.loads(line)["path"]
        for f in (codesearchnet_dir / "python" / "final" / "jsonl" / "valid").glob("*.gz")
        for line in gzip.open(f, "rt", encoding="utf-8")
    }
    test = {
        json.loads(line)["path"]
        for f in (codesearchnet_dir / "python" / "final" / "jsonl" / "test").glob("*.gz")
        for line in gzip.open(f, "rt", encoding="utf-8")
    }
    assert valid and test and not valid & test  # split by file


def test_the_hf_stand_in_holds_the_same_records_in_the_same_order(codesearchnet_dir, hf_code_search_net_dir):
    from hybridcl.data.readers import read_split

    for lang in ("python", "javascript"):
        for split in ("train", "valid", "test"):
            release, _ = read_split("codesearchnet", str(codesearchnet_dir), lang, split)
            hf, files = read_split("hf", str(hf_code_search_net_dir), lang, split)
            assert hf == release and len(files) == (2 if split == "train" else 1)


def test_preset_seed_as_shipped_reads_salesforce_codet5_small_from_the_hf_cache(
    codet5_small_dir, codesearchnet_dir, tmp_path
):
    """No model.name override: the preset's own hub id, resolved offline from a Hugging Face cache."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    snapshot = tmp_path / "hub" / "models--Salesforce--codet5-small" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    for file in codet5_small_dir.iterdir():
        (snapshot / file.name).symlink_to(file)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybridcl",
            "run",
            "preset=reference",
            f"data.path={codesearchnet_dir}",
            "data.max_train=4",
            "tasks=[python]",
            "data.max_val=1",
            "data.max_source_len=96",
            "data.max_target_len=64",
            "train.max_steps=1",
            "train.batch_size=4",
            "eval.max_examples=1",
            "run.device=cpu",
            f"run.output_dir={tmp_path}",
            "run.name=seed",
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    config = (tmp_path / "seed" / "config.yaml").read_text()
    assert "name: Salesforce/codet5-small" in config
    prediction = json.loads((tmp_path / "seed" / "seed-0" / "predictions" / "row1-python.jsonl").read_text())[
        "prediction"
    ]
    assert prediction == SCRIPT


def test_the_tiny_stand_in_behaves_the_same(codet5_tiny_dir):
    from hybridcl.evaluation.generate import generate

    base = load_base(ModelConfig(name=str(codet5_tiny_dir)))
    assert type(base.tokenizer).__name__ == "RobertaTokenizer" and base.model.config.d_model == 64
    # embeddings 4100 x 64 + 2 encoder blocks x 32,896 + 2 decoder blocks x 49,344 + 2 x (bias 32 x 4 + final norm 64)
    assert sum(p.numel() for p in base.model.parameters()) == 262_400 + 65_792 + 98_688 + 2 * 192 == 427_264
    assert generate(base.model, base.tokenizer, ["Return the answer.", "x"], kind="seq2seq", progress=False).texts == [
        SCRIPT,
        SCRIPT,
    ]
