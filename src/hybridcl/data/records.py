"""Function records (CodeSearchNet's fields) and their jsonl / jsonl.gz files.

A record file holds one JSON object per line with the fields of :class:`Record`. Reading is
strict: a corrupt gzip stream, a line that is not UTF-8, malformed JSON, a missing field or a
field of the wrong type raises :class:`DataError` naming the file and line. Blank lines are not
records and are passed over.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hybridcl.errors import DataError, quote

FIELDS = ("repo", "path", "func_name", "language", "code", "docstring")  # required, strings
# Records (JSON lines) longer than this are skipped unread by a run (``data.max_record_bytes``): one
# 55 MB function took 12.5 GB and 158 s, most of it in ast.parse.
MAX_RECORD_BYTES = 1_000_000
TOO_LONG = object()  # what iter_json_lines yields for a line over its max_bytes
_SKIP_CHUNK = 1 << 16


@dataclass
class Record:
    """One function with its documentation, as in CodeSearchNet.

    ``code`` is the function's source. For Python it includes the docstring (as in
    CodeSearchNet); for JavaScript the JSDoc comment stands before the function and is not part
    of ``code``. ``docstring`` is the cleaned documentation text.
    """

    repo: str
    path: str
    func_name: str
    language: str
    code: str
    docstring: str
    url: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def record_from_dict(obj: Any, where: str) -> Record:
    """Check one parsed JSON line and build a :class:`Record`; ``where`` is ``file:line``."""
    if not isinstance(obj, dict):
        raise DataError(
            f"{where}: expected a JSON object with fields {', '.join(FIELDS)}, got {type(obj).__name__}; each "
            "line must be one record object"
        )
    values: dict[str, Any] = {}
    for name in FIELDS:
        if name not in obj:
            raise DataError(
                f"{where}: missing field {quote(name)}; each record needs {', '.join(FIELDS)} (url optional)"
            )
        values[name] = _text(obj[name], name, where)
    url = obj.get("url")
    values["url"] = None if url is None else _text(url, "url", where)
    return Record(**values)


def _text(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(
            f"{where}: field {quote(name)} must be a string, got {type(value).__name__}; fix or remove this record"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            f"{where}: field {quote(name)} holds an invalid \\u escape (a lone surrogate), which is not valid "
            "Unicode text; fix or remove this record"
        ) from None
    return value


def iter_json_lines(path: str | Path, max_bytes: int | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, parsed_object)`` for each line of a jsonl(.gz) file (``None`` for a blank one).

    A line longer than ``max_bytes`` (bytes, without its newline) is neither kept in memory nor
    parsed: it yields ``TOO_LONG``, and reading goes on from the next line, so memory stays below
    about ``max_bytes`` whatever the file holds. Raises :class:`DataError` for a missing file,
    corrupt gzip data, non-UTF-8 text or malformed JSON, naming the file and the (1-based) line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path (record files are .jsonl or .jsonl.gz)")
    gz = path.name.endswith(".gz")
    lineno = 0
    limit = -1 if max_bytes is None else max_bytes + 1  # + 1: room for the newline
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as handle:
            while raw := handle.readline(limit):
                lineno += 1
                if len(raw) == limit and not raw.endswith(b"\n"):
                    while (rest := handle.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                        pass  # drop the rest of the line a chunk at a time
                    yield lineno, TOO_LONG
                    continue
                yield lineno, _parse_line(raw, f"{path}:{lineno}")
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}:{lineno + 1}: corrupt gzip data ({exc or type(exc).__name__}); re-download or re-create the file"
        ) from None
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise DataError(f"{path}: cannot read ({exc.strerror}); check the path and its permissions") from None
        raise DataError(f"{path}:{lineno + 1}: corrupt gzip data ({exc}); re-download or re-create the file") from None


def _parse_line(raw: bytes, where: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); re-encode the "
            "file as UTF-8"
        ) from None
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{where}: malformed JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(
            f"{where}: malformed JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); each "
            "line must be one JSON object"
        ) from None


def read_records(path: str | Path, *, max_bytes: int | None = None, skipped: Counter | None = None) -> list[Record]:
    """Read a record file (``.jsonl`` or ``.jsonl.gz``); strict, see the module docstring.

    Records longer than ``max_bytes`` (bytes of their JSON line) are skipped before parsing and
    counted in ``skipped["too_long"]`` when a counter is given.
    """
    records = []
    for lineno, obj in iter_json_lines(path, max_bytes):
        if obj is TOO_LONG:
            if skipped is not None:
                skipped["too_long"] += 1
            continue
        if obj is None:
            continue
        records.append(record_from_dict(obj, f"{path}:{lineno}"))
    return records


def write_records(records: Iterable[Record], path: str | Path) -> None:
    """Write records atomically (:func:`hybridcl.records.io.write_atomic`: temp file, fsync, rename).

    A ``.gz`` name is gzip-compressed with mtime 0 and no file name in the header, so the same
    records give the same bytes.
    """
    from hybridcl.records.io import (
        write_atomic,
    )  # here: hybridcl.records.io imports torch, which reading records does not need

    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as raw:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as out:
                    _write_lines(records, out)
            else:
                _write_lines(records, raw)

    write_atomic(path, write)


def _write_lines(records: Iterable[Record], out: Any) -> None:
    for record in records:
        out.write(record.to_json().encode("utf-8") + b"\n")
