"""``hybridcl data extract | build | stats``.

:func:`add_commands` registers the commands on the ``hybridcl`` parser; each leaf parser sets
``func`` (a callable taking the parsed args and returning an exit code). Handlers raise
:class:`DataError` on bad input. ``python -m hybridcl.data.cli ...`` runs them on their own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from hybridcl.data.extract import EXTRACT_LANGUAGES, SPLITS, Filters, TreeSource, extract
from hybridcl.data.records import read_records, write_records
from hybridcl.errors import DataError, HybridclError, quote


def add_commands(subparsers) -> None:
    data = subparsers.add_parser("data", help="extract, build and inspect code/docstring data")
    sub = data.add_subparsers(dest="data_command", metavar="{extract,build,stats}")
    sub.required = True

    _add_extract(sub)

    p = sub.add_parser("build", help="rebuild the bundled corpus from its pinned sources (byte for byte)")
    p.add_argument("--out", metavar="DIR", help="where to write (default: the package's data/corpus folder)")
    p.add_argument(
        "--check", action="store_true", help="build into a temporary folder and compare with the shipped corpus"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("stats", help="counts and lengths of record files or of a data source")
    p.add_argument("files", nargs="*", metavar="FILE", help="record files (.jsonl/.jsonl.gz); none = the --source")
    p.add_argument("--source", default="bundled", choices=("bundled", "jsonl", "codesearchnet", "hf"))
    p.add_argument("--path", help="data.path for the source")
    p.add_argument(
        "--language", action="append", help="language(s) to show (default: every language of the bundled corpus)"
    )
    p.set_defaults(func=cmd_stats)


def _add_extract(sub) -> None:
    """``hybridcl data extract``'s arguments."""
    p = sub.add_parser("extract", help="build records from a source tree (CodeSearchNet filters, dedup, split by file)")
    p.add_argument("--language", required=True, help=", ".join(EXTRACT_LANGUAGES))
    p.add_argument("--from", dest="source", required=True, metavar="DIR", help="source tree to extract from")
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="NAME.jsonl.gz writes NAME.train.jsonl.gz and NAME.valid.jsonl.gz "
        "(and NAME.test... with --test-fraction); a folder writes <language>.<split>.jsonl.gz in it",
    )
    p.add_argument("--repo", help="repo field of the records (default: the folder name)")
    p.add_argument(
        "--url-template",
        help="url field, with {path} {start} {end}, e.g. https://github.com/o/r/blob/v1/{path}#L{start}-L{end}",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATH",
        help="folder or file of DIR to leave out, as a path relative to DIR "
        "(src/test; * and ? match within a name; repeatable)",
    )
    p.add_argument(
        "--valid-fraction",
        type=float,
        default=Filters.valid_fraction,
        help="share of files in the valid split (default %(default)s)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=Filters.test_fraction,
        help="share of files in the test split (default %(default)s)",
    )
    p.add_argument("--max-train", type=int, help="keep at most this many train records (deterministic subsample)")
    p.add_argument("--max-val", type=int, help="keep at most this many valid records (deterministic subsample)")
    p.add_argument("--max-code-lines", type=int, default=Filters.max_code_lines)
    p.add_argument("--max-code-chars", type=int, default=Filters.max_code_chars)
    p.add_argument("--no-split", action="store_true", help="write every kept record to --out as is, without splitting")
    p.add_argument("--report", metavar="JSON", help="also write the filter counts to this JSON file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_extract)


def _out_paths(out: str, language: str, splits: list[str]) -> dict[str, Path]:
    path = Path(out)
    for ext in (".jsonl.gz", ".jsonl"):
        if path.name.endswith(ext):
            stem = path.name[: -len(ext)]
            return {s: path.with_name(f"{stem}.{s}{ext}") for s in splits}
    return {s: path / f"{language}.{s}.jsonl.gz" for s in splits}


def cmd_extract(args: argparse.Namespace) -> int:
    if args.language not in EXTRACT_LANGUAGES:
        raise DataError(
            f"unsupported language {quote(args.language)} for extraction: choose one of {', '.join(EXTRACT_LANGUAGES)}"
        )
    for name in ("valid_fraction", "test_fraction"):
        value = getattr(args, name)
        if not 0.0 <= value < 1.0:
            raise DataError(f"--{name.replace('_', '-')} = {value}: must be in [0, 1)")
    if args.valid_fraction + args.test_fraction >= 1.0:
        raise DataError("--valid-fraction + --test-fraction must be below 1 so that some files are left for training")
    root = Path(args.source)
    filters = Filters(
        max_code_lines=args.max_code_lines,
        max_code_chars=args.max_code_chars,
        valid_fraction=0.0 if args.no_split else args.valid_fraction,
        test_fraction=0.0 if args.no_split else args.test_fraction,
    )
    caps = {k: v for k, v in (("train", args.max_train), ("valid", args.max_val)) if v is not None}
    source = TreeSource(
        str(root), args.repo or root.resolve().name, url_template=args.url_template, exclude=tuple(args.exclude)
    )
    result = extract(source, args.language, filters, max_per_split=caps, progress=not args.no_progress)
    print(result.report.table())
    for pattern in args.exclude:
        if f"{root}: {pattern}" in result.report.unmatched_excludes:
            print(f"warning: --exclude {pattern} matched no path under {root}", file=sys.stderr)
    if args.no_split:
        write_records(result.splits["train"], args.out)
        print(f"wrote {len(result.splits['train'])} records to {args.out}")
    else:
        splits = [s for s in SPLITS if s != "test" or args.test_fraction > 0]
        for split, path in _out_paths(args.out, args.language, splits).items():
            write_records(result.splits[split], path)
            print(f"wrote {len(result.splits[split])} {split} records to {path}")
    if args.report:
        Path(args.report).write_text(json.dumps(result.report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from hybridcl.data.build import build_corpus, compare_dirs

    if not args.check:
        build_corpus(args.out, progress=not args.no_progress)
        return 0
    with tempfile.TemporaryDirectory(prefix="hybridcl-check-") as tmp:
        build_corpus(tmp, progress=not args.no_progress)
        differ = compare_dirs(tmp, args.out)
    if differ:
        print(f"the build differs from the shipped corpus in: {', '.join(differ)}")
        return 1
    print("the build matches the shipped corpus byte for byte")
    return 0


def _describe(records) -> str:
    if not records:
        return "0 records"
    lines = [r.code.count("\n") + 1 for r in records]
    words = [len(r.docstring.split()) for r in records]
    files = len({(r.repo, r.path) for r in records})
    return (
        f"{len(records)} records from {files} files; code lines median {statistics.median(lines):g} (max "
        f"{max(lines)}); "
        f"docstring words median {statistics.median(words):g}"
    )


def cmd_stats(args: argparse.Namespace) -> int:
    if args.files:
        for file in args.files:
            print(f"{file}: {_describe(read_records(file))}")
        return 0
    from hybridcl.data.readers import bundled_languages, read_split

    for language in args.language or bundled_languages():
        for split in SPLITS:
            records, _ = read_split(args.source, args.path, language, split)
            print(f"{args.source} {language} {split}: {_describe(records)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hybridcl")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HybridclError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
