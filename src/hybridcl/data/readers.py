"""Readers: the bundled corpus, record jsonl files, the official CodeSearchNet release, the HF dataset.

Every reader returns :class:`Record` lists for one language and one split (``train``, ``valid`` or
``test``) and raises :class:`DataError` naming the file and line of anything it cannot use.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from hybridcl.constants import LANGUAGES as CSN_LANGUAGES  # CodeSearchNet's six
from hybridcl.data.records import TOO_LONG, Record, iter_json_lines, read_records, record_from_dict
from hybridcl.errors import DataError, quote

SOURCES = ("bundled", "codesearchnet", "jsonl", "hf")
_HF_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
# Hugging Face ``code_search_net`` column -> record field
HF_FIELDS = {
    "repository_name": "repo",
    "func_path_in_repository": "path",
    "func_name": "func_name",
    "language": "language",
    "func_code_string": "code",
    "func_documentation_string": "docstring",
    "func_code_url": "url",
}


def bundled_dir() -> Path:
    """The folder of the corpus shipped in the package."""
    return Path(str(resources.files("hybridcl") / "data" / "corpus"))


def bundled_languages() -> list[str]:
    manifest = bundled_dir() / "manifest.json"
    if not manifest.is_file():
        raise DataError(
            f"{manifest}: the bundled corpus manifest is missing; reinstall hybridcl or run `hybridcl data build`"
        )
    return sorted(json.loads(manifest.read_text(encoding="utf-8"))["languages"])


def read_split(
    source: str,
    path: str | None,
    language: str,
    split: str,
    *,
    max_record_bytes: int | None = None,
    skipped: Counter | None = None,
) -> tuple[list[Record], list[str]]:
    """Records of one language and split from ``source``; also returns the files read.

    Records longer than ``max_record_bytes`` (bytes of JSON) are skipped before they are parsed,
    and counted in ``skipped["too_long"]`` if a counter is given.
    """
    bound: dict[str, Any] = {"max_record_bytes": max_record_bytes, "skipped": skipped}
    if split not in _HF_SPLITS:
        raise DataError(f"unknown split {quote(split)}: choose train, valid or test")
    if source == "bundled":
        languages = bundled_languages()
        if language not in languages:
            raise DataError(
                f"unsupported language {quote(language)} for data.source=bundled: the bundled corpus has "
                f"{', '.join(languages)}; "
                "use data.source=codesearchnet or data.source=jsonl for other languages"
            )
        return read_jsonl_split(bundled_dir(), language, split, **bound)
    if source == "jsonl":
        return read_jsonl_split(_need_path(path, source), language, split, **bound)
    if source == "codesearchnet":
        return read_codesearchnet(_need_path(path, source), language, split, **bound)
    if source == "hf":
        return read_hf(language, split, path, **bound)
    raise DataError(f"unknown data source {quote(source)}: choose one of {', '.join(SOURCES)}")


def _need_path(path: str | None, source: str) -> Path:
    if not path:
        raise DataError(f"data.path is required when data.source = {source}: set data.path=/folder/with/data")
    return Path(path)


def read_jsonl_split(
    root: str | Path, language: str, split: str, *, max_record_bytes: int | None = None, skipped: Counter | None = None
) -> tuple[list[Record], list[str]]:
    """``root/<language>.<split>.jsonl.gz`` (or ``.jsonl``), as written by ``hybridcl data extract``;
    for a ``root`` named ``NAME.jsonl.gz`` (or ``.jsonl``), ``NAME.<split>.jsonl.gz`` beside it (what
    ``hybridcl data extract --out NAME.jsonl.gz`` writes)."""
    root, stem = records_stem(Path(root), language)
    for name in (f"{stem}.{split}.jsonl.gz", f"{stem}.{split}.jsonl"):
        file = root / name
        if file.is_file():
            records = read_records(file, max_bytes=max_record_bytes, skipped=skipped)
            _check_language(records, language, file)
            return records, [str(file)]
    raise DataError(
        f"{root}: no {stem}.{split}.jsonl.gz or {stem}.{split}.jsonl; "
        f"create it with `hybridcl data extract --language {language} --from SRC --out {root}/{stem}.jsonl.gz`"
    )


def records_stem(path: Path, language: str) -> tuple[Path, str]:
    """The folder and the file-name stem of a jsonl source: ``(path, language)`` for a folder,
    ``(folder, NAME)`` for ``folder/NAME.jsonl[.gz]``."""
    for suffix in (".jsonl.gz", ".jsonl"):
        if path.name.endswith(suffix) and not path.is_dir():
            return path.parent, path.name.removesuffix(suffix)
    return path, language


def path_source(path: str, language: str) -> str:
    """The reader of a task's ``data`` path: ``codesearchnet`` for the release's layout, else ``jsonl``."""
    return "codesearchnet" if (Path(path) / language / "final" / "jsonl").is_dir() else "jsonl"


def _check_language(records: list[Record], language: str, file: Path) -> None:
    for i, record in enumerate(records):
        if record.language != language:
            raise DataError(
                f"{file}: record {i + 1} has language {quote(record.language)}, expected {quote(language)}; "
                "the file name must match the language of its records"
            )


def read_codesearchnet(
    root: str | Path, language: str, split: str, *, max_record_bytes: int | None = None, skipped: Counter | None = None
) -> tuple[list[Record], list[str]]:
    """The official release: ``root/<language>/final/jsonl/<split>/*.jsonl.gz``."""
    if language not in CSN_LANGUAGES:
        raise DataError(
            f"unsupported language {quote(language)} for data.source=codesearchnet: CodeSearchNet has "
            f"{', '.join(CSN_LANGUAGES)}"
        )
    folder = Path(root) / language / "final" / "jsonl" / split
    files = sorted(folder.glob("*.jsonl.gz"), key=_shard_order) + sorted(folder.glob("*.jsonl"), key=_shard_order)
    if not files:
        raise DataError(
            f"{folder}: no .jsonl.gz files; unzip the CodeSearchNet release {language}.zip into {root} "
            f"so that {language}/final/jsonl/{split}/ exists"
        )
    records = []
    for file in files:
        records.extend(
            read_records(file, max_bytes=max_record_bytes, skipped=skipped)
        )  # the release's rows carry the record fields by the same names
    return records, [str(f) for f in files]


def _shard_order(file: Path) -> list:
    """Sort key that reads ``python_train_10`` after ``python_train_2``: the release's order, which
    "first rows" selections and file-order subsamples follow."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", file.name)]


def hf_row_to_record(row: Any, where: str) -> Record:
    """One row of the HF ``code_search_net`` dataset as a :class:`Record`."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object with the code_search_net columns, got {type(row).__name__}")
    missing = [column for column in HF_FIELDS if column not in row and column != "func_code_url"]
    if missing:
        raise DataError(
            f"{where}: missing field {quote(missing[0])}; a code_search_net row needs {', '.join(HF_FIELDS)}"
        )
    return record_from_dict({field: row.get(column) for column, field in HF_FIELDS.items()}, where)


def _read_hf_folder(
    folder: Path, hf_split: str, max_record_bytes: int | None, skipped: Counter | None
) -> tuple[list[Record], list[str]]:
    """``read_hf`` from a local folder of ``<hf split>*.jsonl[.gz]`` files in the dataset's format."""
    files = sorted(folder.glob(f"{hf_split}*.jsonl.gz")) + sorted(folder.glob(f"{hf_split}*.jsonl"))
    if not files:
        raise DataError(
            f"{folder}: no {hf_split}*.jsonl[.gz] files in the code_search_net format; "
            "save the dataset with Dataset.to_json or point data.path at a hub id"
        )
    records = []
    for file in files:
        for lineno, row in iter_json_lines(file, max_record_bytes):
            if row is TOO_LONG and skipped is not None:
                skipped["too_long"] += 1
            elif row is not None and row is not TOO_LONG:
                records.append(hf_row_to_record(row, f"{file}:{lineno}"))
    return records, [str(f) for f in files]


def read_hf(
    language: str,
    split: str,
    path: str | None = None,
    *,
    max_record_bytes: int | None = None,
    skipped: Counter | None = None,
) -> tuple[list[Record], list[str]]:
    """The Hugging Face ``code_search_net`` dataset.

    ``path`` None or a hub id (default ``code_search_net``): downloaded with ``datasets`` (needs
    network the first time, then the HF cache). ``path`` an existing folder: files in the dataset's
    format, ``path/<language>/<hf split>*.jsonl[.gz]`` (split names ``train``, ``validation``,
    ``test``), read without ``datasets``.
    """
    if language not in CSN_LANGUAGES:
        raise DataError(
            f"unsupported language {quote(language)} for data.source=hf: code_search_net has {', '.join(CSN_LANGUAGES)}"
        )
    hf_split = _HF_SPLITS[split]
    if path and Path(path).exists():
        return _read_hf_folder(Path(path) / language, hf_split, max_record_bytes, skipped)
    try:
        import datasets  # optional: pip install 'hybridcl[eval]'
    except ImportError:
        raise DataError(
            "data.source=hf needs the `datasets` package: pip install datasets (or hybridcl[eval]); "
            "or use data.source=codesearchnet with the official release"
        ) from None
    name = path or "code_search_net"
    try:
        dataset = datasets.load_dataset(name, language, split=hf_split)
    except Exception as exc:  # network, hub and script errors all end here; the user needs one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"hf dataset {name} ({language}, {hf_split}): cannot load ({first}); check the network or the HF cache, "
            "or use data.source=codesearchnet with a local copy"
        ) from None
    records = []
    for i, row in enumerate(dataset):
        row = dict(row)
        # Rows come already decoded here; the bound still keeps a huge one away from the parsers.
        size = sum(len(v.encode("utf-8")) for v in row.values() if isinstance(v, str))
        if max_record_bytes is not None and size > max_record_bytes:
            if skipped is not None:
                skipped["too_long"] += 1
            continue
        records.append(hf_row_to_record(row, f"{name}/{language}/{hf_split}:row {i + 1}"))
    return records, [f"hf:{name}/{language}/{hf_split}"]
