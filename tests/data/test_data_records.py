import gzip
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridcl.data.records import Record, read_records, write_records
from hybridcl.errors import DataError

REC = {
    "repo": "r",
    "path": "a.py",
    "func_name": "f",
    "language": "python",
    "code": "def f():\n    return 1",
    "docstring": "Return one now.",
}


def lines(*objs) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objs)


def test_round_trip_and_reproducible_gzip(tmp_path):
    records = [Record(**REC), Record(**{**REC, "func_name": "g", "code": "héllo ✓"}, url="https://x")]
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    write_records(records, a)
    write_records(records, b)
    assert read_records(a) == records
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime
    write_records(records, tmp_path / "c.jsonl")
    assert read_records(tmp_path / "c.jsonl") == records
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_blank_lines_are_not_records(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(lines(REC) + b"\n  \n" + lines(REC))
    assert len(read_records(p)) == 2


@pytest.mark.parametrize(
    "content, line, what",
    [
        (lines(REC, b"{not json"), 2, "malformed JSON"),
        (lines(REC, REC, {k: v for k, v in REC.items() if k != "docstring"}), 3, "missing field 'docstring'"),
        (lines(REC, b'{"repo": "caf\xe9"}'), 2, "not UTF-8 text (byte 0xe9 at column 14)"),
        (lines({**REC, "code": 3}), 1, "field 'code' must be a string"),
        (lines([1, 2]), 1, "expected a JSON object"),
        (lines({**REC, "code": "\ud800"}), 1, "lone surrogate"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, content, line, what):
    for name, data in (("x.jsonl", content), ("x.jsonl.gz", gzip.compress(content))):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(DataError) as err:
            read_records(p)
        msg = str(err.value)
        assert msg.startswith(f"{p}:{line}: ") and what in msg and "\n" not in msg


def test_corrupt_gzip(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    p.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match=re.escape(f"{p}:1: corrupt gzip data")):
        read_records(p)
    data = gzip.compress(lines(*[REC] * 2000))
    p.write_bytes(data[: len(data) // 2])  # truncated stream
    with pytest.raises(DataError, match=re.escape(f"{p}:") + r"\d+: corrupt gzip data"):
        read_records(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "none.jsonl")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.one_of(
                st.text(max_size=40),
                st.sampled_from([json.dumps(REC), json.dumps({**REC, "url": None}), "{}", "[]", "null"]),
            ),
            max_size=6,
        ).map(lambda xs: "\n".join(xs).encode("utf-8", "surrogatepass")),
    ),
    gz=st.booleans(),
)
def test_fuzz_read_records_returns_or_raises_data_error(tmp_path, data, gz):
    p = tmp_path / ("f.jsonl.gz" if gz else "f.jsonl")
    p.write_bytes(gzip.compress(data) if gz and data[:1] != b"x" else data)
    try:
        out = read_records(p)
    except DataError as exc:
        assert "\n" not in str(exc) and str(p) in str(exc)
    else:
        assert all(isinstance(r, Record) for r in out)
