import json
import sys
import types
from dataclasses import replace

import pytest

from hybridcl.config.experiment import DataConfig
from hybridcl.data.readers import bundled_dir, read_split
from hybridcl.data.records import Record, write_records
from hybridcl.data.tasks import format_prompt, load_task_data, make_examples, strip_docstring
from hybridcl.errors import DataError

PY = Record(
    "r",
    "a.py",
    "f",
    "python",
    'def f(x):\n    """Double the value.\n\n    Details here.\n    """\n    return 2 * x',
    "Double the value.\n\nDetails here.",
)
JS = Record("r", "a.js", "g", "javascript", "function g(x) {\n  return x;\n}", "Return the input unchanged.")


def test_make_examples_both_directions():
    (t2c,) = make_examples([PY], "text-to-code")
    assert (t2c.source, t2c.target) == ("Double the value.", "def f(x):\n    return 2 * x")
    (c2t,) = make_examples([PY], "code-to-text")
    assert (c2t.source, c2t.target) == ("def f(x):\n    return 2 * x", "Double the value.")
    assert c2t.id == t2c.id and t2c.id.startswith("python/r/a.py::f#")
    (js,) = make_examples([JS], "code-to-text")
    assert js.source == JS.code and js.target == "Return the input unchanged."
    assert make_examples([Record("r", "b.py", "h", "python", "def h(): pass", "  ")], "text-to-code") == []
    with pytest.raises(DataError, match="unknown direction"):
        make_examples([PY], "sideways")


def test_strip_docstring_variants():
    assert strip_docstring('def f():\n    """Only doc."""', "python") == "def f():\n    pass"
    assert strip_docstring('def f(): "Doc."; return 1', "python") == "def f(): return 1"
    assert strip_docstring('def f():\n    """Doc."""\n    print "py2"', "python") == 'def f():\n    print "py2"'
    assert strip_docstring("/** Doc. */\nfunction f() {}", "javascript") == "function f() {}"
    assert (
        strip_docstring("/**\n * Doc.\n */\npublic int f() {\n  return 1;\n}", "java")
        == "public int f() {\n  return 1;\n}"
    )
    assert strip_docstring("/** Doc. */\nfunction f() {\n}", "php") == "function f() {\n}"


def test_format_prompt():
    assert format_prompt("Add numbers.", "python", "text-to-code", "seq2seq") == "Generate Python: Add numbers."
    assert format_prompt("f()", "javascript", "code-to-text", "seq2seq") == "Summarize JavaScript: f()"
    assert (
        format_prompt("Add numbers.", "python", "text-to-code", "causal")
        == "Python function.\nDescription: Add numbers.\nCode:\n"
    )
    assert format_prompt("f()", "javascript", "code-to-text", "causal") == "JavaScript code:\nf()\nDescription:\n"
    (ex,) = make_examples([JS], "code-to-text")
    assert format_prompt(ex, "javascript", "code-to-text", "causal").startswith("JavaScript code:\nfunction g(x)")


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
@pytest.mark.parametrize("direction", ["text-to-code", "code-to-text"])
def test_every_prompt_names_its_language(kind, direction):
    # issue 11 #1: a model whose weights serve several tasks can only learn the language from the prompt
    prompts = {lang: format_prompt("Add numbers.", lang, direction, kind) for lang in ("python", "javascript", "go")}
    assert "Python" in prompts["python"] and "JavaScript" in prompts["javascript"] and "Go" in prompts["go"]
    assert len(set(prompts.values())) == 3


def _jsonl_dir(tmp_path, n_train=30, n_valid=5):
    def recs(split, n):
        return [
            Record(
                "r", f"{split}{i}.py", f"f{i}", "python", f"def f{i}():\n    return {i}", f"Return the number {i} here."
            )
            for i in range(n)
        ]

    write_records(recs("t", n_train), tmp_path / "python.train.jsonl.gz")
    write_records(recs("v", n_valid), tmp_path / "python.valid.jsonl")
    return tmp_path


def test_load_task_data_jsonl_subsample(tmp_path):
    cfg = DataConfig(source="jsonl", path=str(_jsonl_dir(tmp_path)), max_train=10, direction="code-to-text")
    a = load_task_data(cfg, "python", seed=0)
    assert len(a.train) == 10 and len(a.val) == 5
    assert a.report["train"] == {
        "files": [
            {
                "root": "data.path",
                "path": "python.train.jsonl.gz",
                "sha256": _sha256(tmp_path / "python.train.jsonl.gz"),
            }
        ],
        "records": 30,
        "skipped_too_long": 0,
        "skipped_empty": 0,
        "examples": 30,
        "kept": 10,
    }
    assert [e.id for e in load_task_data(cfg, "python", seed=0).train] == [e.id for e in a.train]
    assert [e.id for e in load_task_data(cfg, "python", seed=1).train] != [e.id for e in a.train]
    assert a.train[0].direction == "code-to-text"


def test_long_targets_are_dropped_from_both_splits_and_counted(tmp_path):
    """issue 11 #4: examples whose target is longer than data.max_target_len tokens are left out by default."""
    from transformers import ByT5Tokenizer

    from hybridcl.data.batching import target_length_counter

    def recs(split, n):  # every third function has a long body; ByT5 counts bytes, +1 for eos
        return [
            Record(
                "r",
                f"{split}{i}.py",
                f"f{i}",
                "python",
                f"def f{i}():\n    return {'1 + ' * 20 * (i % 3 == 0)}{i}",
                f"Return the number {i}.",
            )
            for i in range(n)
        ]

    write_records(recs("t", 30), tmp_path / "python.train.jsonl.gz")
    write_records(recs("v", 5), tmp_path / "python.valid.jsonl")
    lengths = target_length_counter(ByT5Tokenizer(), "causal")
    assert lengths(make_examples(recs("v", 2), "text-to-code")) == [103, 23]  # "def f0():\n    return 1 + ... 0" + eos
    cfg = DataConfig(source="jsonl", path=str(tmp_path), max_train=10, max_target_len=50)
    data = load_task_data(cfg, "python", target_lengths=lengths)
    assert [e.id.split("::")[1].split("#")[0] for e in data.val] == ["f1", "f2", "f4"]
    assert data.report["valid"] | {"files": None} == {
        "files": None,
        "records": 5,
        "skipped_too_long": 0,
        "skipped_empty": 0,
        "examples": 5,
        "kept": 3,
        "long_targets_checked": 5,
        "long_targets": 2,
    }
    assert data.report["long_targets"] == {"mode": "drop", "max_target_len": 50}
    train = data.report["train"]
    assert len(data.train) == train["kept"] == 10 and all(n <= 50 for n in lengths(data.train))
    assert train["long_targets_checked"] - train["long_targets"] == 10 and train["long_targets"] >= 1
    # the sample is the first 10 fitting examples of the same seeded order: the same without a length check
    unchecked = load_task_data(replace(cfg, max_train=None), "python").train
    assert {e.id for e in data.train} < {e.id for e in unchecked if len(e.target) + 1 <= 50}
    cut = load_task_data(replace(cfg, long_targets="cut"), "python", target_lengths=lengths)
    assert (
        len(cut.val) == 5 and cut.report["valid"]["long_targets"] == 2 and cut.report["long_targets"]["mode"] == "cut"
    )
    with pytest.raises(
        DataError,
        match=r"all 30 targets are longer than data.max_target_len = 20 tokens; raise it or set data.long_targets=cut",
    ):
        load_task_data(replace(cfg, max_target_len=20, max_train=None), "python", target_lengths=lengths)


def test_load_task_data_errors(tmp_path):
    with pytest.raises(
        DataError,
        match="unsupported language 'rust' for data.source=bundled: "
        "the bundled corpus has go, java, javascript, php, python, ruby",
    ):
        load_task_data(DataConfig(), "rust")
    with pytest.raises(DataError, match="eval.split = 'validation': choose valid or test"):
        load_task_data(DataConfig(), "python", eval_split="validation")
    with pytest.raises(DataError, match="no python.train.jsonl.gz"):
        load_task_data(DataConfig(source="jsonl", path=str(tmp_path)), "python")
    write_records([], tmp_path / "python.train.jsonl.gz")
    write_records([], tmp_path / "python.valid.jsonl.gz")
    with pytest.raises(DataError, match=f"{tmp_path}/python.train.jsonl.gz: no train examples for python"):
        load_task_data(DataConfig(source="jsonl", path=str(tmp_path)), "python")


def test_language_mismatch_in_jsonl(tmp_path):
    write_records([JS], tmp_path / "python.train.jsonl")
    with pytest.raises(DataError, match="record 1 has language 'javascript', expected 'python'"):
        read_split("jsonl", str(tmp_path), "python", "train")


def test_bundled_corpus_matches_manifest():
    manifest = json.loads((bundled_dir() / "manifest.json").read_text())
    total = sum(p.stat().st_size for p in bundled_dir().iterdir() if p.is_file())
    assert total <= 10 * 2**20
    for language in ("python", "javascript", "go", "ruby", "php", "java"):
        counts = manifest["languages"][language]["counts"]
        assert counts["train"] >= 493 and counts["valid"] >= 152 and counts["test"] >= 49  # java is the smallest
        data = load_task_data(DataConfig(), language)
        assert (len(data.train), len(data.val)) == (counts["train"], counts["valid"])
        train_files = {e.id.split("::")[0] for e in data.train}
        assert not train_files & {e.id.split("::")[0] for e in data.val}
        for source in manifest["languages"][language]["sources"]:
            assert (bundled_dir() / source["license_file"]).is_file() and source["license"] in (
                "PSF-2.0",
                "MIT",
                "BSD-3-Clause",
            )


def test_eval_split_test_serves_the_bundled_test_split():
    valid = load_task_data(DataConfig(), "go")
    test = load_task_data(DataConfig(max_val=50), "go", eval_split="test")
    assert test.report["eval_split"] == "test" and test.report["test"]["records"] == 253 and len(test.val) == 50
    assert [e.id for e in test.train] == [
        e.id for e in valid.train
    ]  # training data does not depend on the scored split

    def files(examples):
        return {e.id.split("::")[0] for e in examples}

    assert not files(test.val) & files(valid.val) and not files(test.val) & files(valid.train)


CSN_ROW = {
    "repo": "o/r",
    "path": "m.py",
    "func_name": "f",
    "original_string": "x",
    "language": "python",
    "code": 'def f():\n    """Return one always here."""\n    return 1',
    "code_tokens": [],
    "docstring": "Return one always here.",
    "docstring_tokens": [],
    "sha": "0",
    "partition": "train",
    "url": "https://github.com/o/r/blob/0/m.py#L1-L3",
}


def test_codesearchnet_release_layout(tmp_path):
    folder = tmp_path / "python" / "final" / "jsonl" / "train"
    folder.mkdir(parents=True)
    write_records([], folder / "python_train_1.jsonl.gz")
    import gzip

    (folder / "python_train_0.jsonl.gz").write_bytes(gzip.compress((json.dumps(CSN_ROW) + "\n").encode()))
    records, files = read_split("codesearchnet", str(tmp_path), "python", "train")
    assert len(records) == 1 and records[0].url == CSN_ROW["url"] and len(files) == 2
    with pytest.raises(DataError, match="no .jsonl.gz files"):
        read_split("codesearchnet", str(tmp_path), "python", "valid")
    with pytest.raises(DataError, match="unsupported language 'rust'"):
        read_split("codesearchnet", str(tmp_path), "rust", "train")


def test_codesearchnet_shards_are_read_in_the_release_order(tmp_path):
    """The release numbers its shards python_train_0 ... python_train_13: 2 comes before 10, as in the release."""
    folder = tmp_path / "python" / "final" / "jsonl" / "train"
    folder.mkdir(parents=True)
    for n in range(12):
        row = {**CSN_ROW, "func_name": f"f{n}", "code": CSN_ROW["code"].replace("def f(", f"def f{n}(")}
        write_records(
            [Record(**{k: row[k] for k in ("repo", "path", "func_name", "language", "code", "docstring")})],
            folder / f"python_train_{n}.jsonl.gz",
        )
    records, files = read_split("codesearchnet", str(tmp_path), "python", "train")
    assert [r.func_name for r in records] == [f"f{n}" for n in range(12)]
    assert [f.rsplit("/", 1)[1] for f in files[:3]] == [
        "python_train_0.jsonl.gz",
        "python_train_1.jsonl.gz",
        "python_train_2.jsonl.gz",
    ]


HF_ROW = {
    "repository_name": "o/r",
    "func_path_in_repository": "m.js",
    "func_name": "g",
    "whole_func_string": "x",
    "language": "javascript",
    "func_code_string": "function g() {\n  return 1;\n}",
    "func_code_tokens": [],
    "func_documentation_string": "Return one for the caller.",
    "func_documentation_tokens": [],
    "split_name": "train",
    "func_code_url": "https://github.com/o/r/blob/0/m.js#L1-L3",
}


def test_hf_local_files_in_dataset_format(tmp_path):
    folder = tmp_path / "javascript"
    folder.mkdir()
    (folder / "validation-0.jsonl").write_text(
        json.dumps(HF_ROW) + "\n" + json.dumps({**HF_ROW, "func_name": None}) + "\n"
    )
    with pytest.raises(DataError, match=f"{folder}/validation-0.jsonl:2: field 'func_name' must be a string"):
        read_split("hf", str(tmp_path), "javascript", "valid")
    (folder / "validation-0.jsonl").write_text(json.dumps(HF_ROW) + "\n")
    (records, _) = read_split("hf", str(tmp_path), "javascript", "valid")
    assert records == [
        Record(
            "o/r",
            "m.js",
            "g",
            "javascript",
            HF_ROW["func_code_string"],
            "Return one for the caller.",
            HF_ROW["func_code_url"],
        )
    ]


def test_hf_hub_through_datasets(monkeypatch):
    calls = []
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, config, split: calls.append((name, config, split)) or [HF_ROW]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    records, files = read_split("hf", None, "javascript", "valid")
    assert calls == [("code_search_net", "javascript", "validation")] and records[0].func_name == "g"

    def offline(*args, **kwargs):
        raise ConnectionError("no network\nmore")

    fake.load_dataset = offline
    with pytest.raises(DataError, match=r"cannot load \(no network\)"):
        read_split("hf", None, "javascript", "train")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match="needs the `datasets` package"):
        read_split("hf", None, "javascript", "train")


def test_train_seed_draws_the_training_sample_alone(tmp_path):
    cfg = DataConfig(source="jsonl", path=str(_jsonl_dir(tmp_path)), max_train=10, max_val=3, direction="code-to-text")
    a = load_task_data(cfg, "python", seed=0, train_seed=0)
    b = load_task_data(cfg, "python", seed=0, train_seed=1)
    assert [e.id for e in a.val] == [e.id for e in b.val]  # the evaluation sample is seed's
    assert [e.id for e in a.train] != [e.id for e in b.train]
    assert [e.id for e in b.train] == [e.id for e in load_task_data(cfg, "python", seed=1).train]
    # all examples where fewer than max_train: every seed trains on all of them
    every = replace(cfg, max_train=100)
    assert {e.id for e in load_task_data(every, "python", train_seed=0).train} == {
        e.id for e in load_task_data(every, "python", train_seed=5).train
    }


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
