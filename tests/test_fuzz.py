"""Fuzzing the two parsers that read user input: the config loader and the record readers.

Contract: the config loader returns a valid config or raises ConfigError; a record reader returns
records or raises DataError. Nothing else (no ValueError, UnicodeDecodeError, RecursionError ...).
The @example's are cases hypothesis found (or that we know break naive parsers); they stay so the
regressions are checked on every run, also with hypothesis' database empty.
"""

import gzip
import math
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hybridcl.config.experiment import ExperimentConfig, load_config
from hybridcl.data.readers import read_jsonl_split
from hybridcl.data.records import FIELDS, Record, read_records
from hybridcl.errors import ConfigError, DataError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Keys that exist, so the fuzzer reaches the typing and validation code, not just "unknown key".
KEYS = [
    "strategy",
    "tasks",
    "preset",
    "model.name",
    "model.kind",
    "model.allow_pickle",
    "model.trust_remote_code",
    "components.lora.r",
    "components.lora.dropout",
    "components.lora.target_modules",
    "components.full_layer.init",
    "baselines.replay_ratio",
    "data.source",
    "data.path",
    "data.max_train",
    "data.max_source_len",
    "train.epochs",
    "train.lr",
    "train.grad_clip",
    "train.precision",
    "train.max_steps",
    "train.log_every",
    "eval.top_p",
    "eval.max_examples",
    "eval.sandbox_timeout_s",
    "run.seeds",
    "run.name",
    "run.device",
    "train",
    "model",
    "run",
    "train.lr.x",
    "train.",
    ".",
    "",
]
VALUES = [
    "1",
    "0",
    "-1",
    "2.5",
    "1e30",
    ".nan",
    ".inf",
    "-.inf",
    "null",
    "~",
    "true",
    "no",
    "[]",
    "[1,2]",
    "[python,javascript]",
    "[python,cobol]",
    "{}",
    "{a: 1}",
    "'x'",
    "abc",
    "2001-13-01",
    "2024-05-01",
    "!!binary aGk=",
    "!!set {a}",
    "[",
    "]",
    "{",
    ": :",
    "&a [*a]",
    "*a",
    "!!python/object:os.system x",
    "0x10",
    "1_000",
    "",
    "=",
    "'",
    '"\\ud800"',
]


def _check_config(make):
    try:
        config = make()
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc).strip()  # one line
        return
    assert isinstance(config, ExperimentConfig)
    # A config that loads is usable: numbers are finite, so training cannot meet nan epochs or lr.
    for section in (config.train, config.eval, config.baselines, config.components.lora):
        for value in vars(section).values():
            if isinstance(value, float):
                assert math.isfinite(value)


override = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=20)),
    st.text(max_size=30),
)


@FUZZ
@given(st.lists(override, max_size=4))
@example(["train.epochs=.nan"])  # passed validation (nan > 0 is False, nan <= 0 too), crashed math.ceil later
@example(["train.lr=.inf"])
@example(["train.lr=1" + "0" * 400])  # an int beyond float range: OverflowError in math.isfinite
@example(["train.lr=1e30"])  # YAML 1.1 reads 1e30 (no dot) as a string: accepted as a number
@example(["run.name=2001-13-01"])  # YAML timestamp with month 13: PyYAML raises ValueError, not YAMLError
@example(["run.name=0000-01-01"])  # year 0: ValueError from datetime
@example(["train.lr=" + "[" * 2000])  # deep nesting: RecursionError inside PyYAML
@example(["model.name=!!binary aGk="])  # bytes
@example(["train.lr.x=1"])  # a scalar key used as a section
@example(["preset=../presets/smoke"])
@example(["config="])
def test_overrides_give_a_config_or_config_error(overrides):
    _check_config(lambda: load_config(overrides=["preset=smoke", *overrides]))


yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.builds(
            lambda k, v: f"{k.replace('.', ': {')}: {v}" + "}" * k.count("."),
            st.sampled_from(KEYS),
            st.sampled_from(VALUES),
        ),
        max_size=5,
    ).map("\n".join),
    st.text(alphabet=string.printable, max_size=200),
)


@FUZZ
@given(yaml_text)
@example("a: 2001-13-01\n")  # ValueError from PyYAML's timestamp constructor
@example("[" * 3000)  # RecursionError from PyYAML's parser
@example("extends: [1]\n")
@example("extends: smoke\ntrain: {epochs: .nan}\n")
@example("extends: smoke\nextends: reference\n")
@example("? [a]\n: 1\n")  # unhashable key
@example("1: 2\n")  # non-string key
@example("null: 1\n")
@example("\x00")
@example("model: !!python/object/apply:os.system [echo hi]\n")  # safe_load refuses to construct it
def test_yaml_documents_give_a_config_or_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _check_config(lambda: load_config(file=path))


@FUZZ
@given(st.binary(max_size=300))
@example(b"\xff\xfe\x00a")  # not UTF-8: UnicodeDecodeError escaped load_config
@example(b"\xef\xbb\xbfstrategy: lora_only\n")  # a UTF-8 byte-order mark
def test_yaml_bytes_give_a_config_or_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_bytes(data)
    _check_config(lambda: load_config(file=path))


# ---------------------------------------------------------------------------------------------
# Record readers

GOOD = Record("o/r", "a.py", "f", "python", "def f():\n    pass\n", "Do it.").to_json().encode()

line = st.one_of(
    st.just(GOOD),
    st.binary(max_size=60),
    st.builds(lambda b: GOOD[: len(GOOD) // 2] + b, st.binary(max_size=8)),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"{}",
            b"[]",
            b"null",
            b"NaN",
            b"1" * 5000,
            b'"\\ud800"',
            b"{" * 100000,
            GOOD.replace(b'"f"', b"1"),
            GOOD.replace(b"Do it.", b"\\ud800"),
            b"\xef\xbb\xbf" + GOOD,
        ]
    ),
)
jsonl = st.lists(line, max_size=6).map(b"\n".join)


def _check_records(path):
    try:
        records = read_records(path)
    except DataError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert all(isinstance(r, Record) for r in records)
    for r in records:
        for name in FIELDS:
            assert isinstance(getattr(r, name), str)
            getattr(r, name).encode("utf-8")  # valid text, no lone surrogates


@FUZZ
@given(jsonl)
@example(b"1" * 5000)  # int too long for json's int conversion limit: ValueError, not JSONDecodeError
@example(b"[" * 100000)  # RecursionError in the json decoder
@example(GOOD.replace(b"Do it.", b"\\ud800"))  # a lone surrogate escape
@example(b"\xef\xbb\xbf" + GOOD)  # byte-order mark
@example(b"\xff" + GOOD)
def test_jsonl_gives_records_or_data_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("rec") / "python.train.jsonl"
    path.write_bytes(data)
    _check_records(path)


@FUZZ
@given(
    st.one_of(
        jsonl.map(gzip.compress),  # valid gzip of fuzzed lines
        jsonl.map(lambda b: gzip.compress(b)[: max(0, len(gzip.compress(b)) - 5)]),  # truncated
        st.binary(max_size=200).map(lambda b: b"\x1f\x8b" + b),  # gzip magic then garbage
        st.binary(max_size=200),
        jsonl.map(lambda b: gzip.compress(b) + b"junk"),
    )
)  # trailing garbage after a member
@example(b"")
@example(b"\x1f\x8b")
@example(b"\x1f\x8b\x08\x08\x00\x00\x00\x00\x00\x03abc")  # FNAME flag, name never terminated
@example(gzip.compress(GOOD) + b"\x1f\x8b")
def test_jsonl_gz_gives_records_or_data_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("rec") / "python.train.jsonl.gz"
    path.write_bytes(data)
    _check_records(path)


@FUZZ
@given(jsonl)
def test_reader_split_gives_records_or_data_error(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("split")
    (root / "python.valid.jsonl").write_bytes(data)
    try:
        records, files = read_jsonl_split(root, "python", "valid")
    except DataError:
        return
    assert files == [str(root / "python.valid.jsonl")] and all(r.language == "python" for r in records)


def test_a_missing_record_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no python.train.jsonl.gz or python.train.jsonl"):
        read_jsonl_split(tmp_path, "python", "train")
