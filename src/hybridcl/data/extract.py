"""Build function records from a source tree, the way CodeSearchNet built its corpus.

Python is parsed with :mod:`ast` (functions and methods that have a docstring). The other
languages are parsed with their tree-sitter grammars, and a function's docstring is the comment
right before it: a ``/** ... */`` doc comment (JSDoc, Javadoc, PHPDoc), or else a block of line
comments with no blank line between them and the function (``//`` in Go and JavaScript, ``#`` in
Ruby). The docstring is the text before the first ``@tag``; inline tags (``{@link X}``) become
text. JavaScript: function declarations, class methods, named function / arrow expressions and
object methods. Go: functions and methods (``Receiver.Name``). Java, PHP, Ruby: methods and
functions, named ``Class.method``.

Then, in this order, and every step counted in an :class:`ExtractReport`:

1. files: test files and folders, minified files, non-UTF-8 files and files that do not parse
   are skipped (counted per reason);
2. functions: no docstring, nested inside another function (not JavaScript), test functions
   (name contains ``test``), constructors and standard methods (``__init__``, ``__str__``,
   ``constructor``, ``toString``, ``initialize``, ``__construct``, Go's ``init``...), docstring
   summary shorter than 3 or longer than 256 word tokens, code shorter than 3 lines or longer
   than the limits, body that is only the docstring;
3. exact duplicates (same code up to whitespace) and near duplicates (Jaccard similarity of the
   identifier sets >= 0.8, found with MinHash + LSH and then checked exactly); the first in
   (source, path, line) order is kept;
4. a split **by file**: the split of a function is decided by a hash of ``repo`` + ``path``, so no
   file is in two splits and the same file always lands in the same split.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import os
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybridcl.data.records import Record
from hybridcl.errors import DataError, quote
from hybridcl.progress import progress_bar

EXTRACT_LANGUAGES = ("python", "javascript", "go", "java", "php", "ruby")
SPLITS = ("train", "valid", "test")
EXTENSIONS = {
    "python": (".py",),
    "javascript": (".js", ".mjs", ".cjs"),
    "go": (".go",),
    "java": (".java",),
    "php": (".php",),
    "ruby": (".rb",),
}
_TEST_DIRS = {"test", "tests", "idle_test", "__tests__", "testing", "spec", "specs", "testdata", "Tests"}
# Constructors and methods every class has, by language (Python's are the __dunder__ names).
_SPECIAL = {
    "javascript": {"constructor", "toString", "valueOf", "toJSON", "toLocaleString"},
    "go": {"init", "main"},
    "java": {"toString", "equals", "hashCode", "clone", "finalize"},
    "ruby": {
        "initialize",
        "to_s",
        "inspect",
        "to_str",
        "==",
        "eql?",
        "hash",
        "<=>",
        "method_missing",
        "respond_to_missing?",
    },
    "php": set(),  # every __name is special (magic methods), checked by prefix
}
_WORD = re.compile(r"\w+")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*|\d+")

# The filter steps in the order they are applied (the report's rows).
FILTER_STEPS = (
    ("no_docstring", "no docstring"),
    ("nested", "nested in a function"),
    ("test", "test function"),
    ("special", "constructor / standard method"),
    ("docstring_short", "docstring < min tokens"),
    ("docstring_long", "docstring > max tokens"),
    ("code_short", "code < min lines"),
    ("code_long", "code > max lines/chars"),
    ("body_only_docstring", "body is only the docstring"),
)


# A larger source file is skipped unread ("too large"): ast / tree-sitter take ~200x its size in
# memory. A constant rather than a filter so the bundled corpus manifest (which lists the filters)
# stays as it was; the largest file of CPython's standard library is 0.76 MB.
MAX_SOURCE_BYTES = 1_000_000


@dataclass(frozen=True)
class Filters:
    """CodeSearchNet-style filters and the split fractions (tokens are ``\\w+`` words)."""

    min_docstring_tokens: int = 3
    max_docstring_tokens: int = 256
    min_code_lines: int = 3
    max_code_lines: int = 100
    max_code_chars: int = 4000
    max_file_line_chars: int = 1000  # a longer line marks a minified / generated file
    near_duplicate_jaccard: float = 0.8
    valid_fraction: float = 0.2
    test_fraction: float = 0.0


@dataclass(frozen=True)
class TreeSource:
    """One source tree to extract from.

    ``url_template`` may use ``{path}``, ``{start}`` and ``{end}`` (1-based lines), e.g.
    ``https://github.com/python/cpython/blob/v3.11.7/Lib/{path}#L{start}-L{end}``.
    ``path_prefix`` is put before each file's path relative to ``root`` in the record.
    ``exclude`` holds folder or file paths relative to ``root`` (``dist``, ``src/test``; ``*``
    and ``?`` match within a name) to leave out; they are not walked and not counted (e.g.
    ``site-packages`` inside a stdlib folder). A pattern that matches nothing is listed in the
    report's ``unmatched_excludes``. ``include``, when given, keeps only these folders or files
    (same patterns), e.g. a few packages of a large standard library.
    """

    root: str
    repo: str
    path_prefix: str = ""
    url_template: str | None = None
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()


@dataclass
class ExtractReport:
    """Counts at each step of an extraction."""

    language: str
    files_found: int = 0
    files_skipped: dict[str, int] = field(
        default_factory=lambda: {"test path": 0, "minified": 0, "not UTF-8": 0, "syntax error": 0}
    )
    functions_found: int = 0
    filtered: dict[str, int] = field(default_factory=lambda: {key: 0 for key, _ in FILTER_STEPS})
    exact_duplicates: int = 0
    near_duplicates: int = 0
    kept: int = 0
    splits: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    files_per_split: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    subsampled: dict[str, int] = field(default_factory=dict)  # split -> examples left after a cap
    unmatched_excludes: list[str] = field(
        default_factory=list
    )  # "ROOT: PATTERN" for exclude / include patterns that matched no path

    @property
    def files_parsed(self) -> int:
        return self.files_found - sum(self.files_skipped.values())

    def rows(self) -> list[tuple[str, int, int]]:
        """``(step, removed, remaining)`` for every step, functions from ``functions_found`` on."""
        rows = [("functions found", 0, self.functions_found)]
        remaining = self.functions_found
        for key, label in FILTER_STEPS:
            remaining -= self.filtered[key]
            rows.append((label, self.filtered[key], remaining))
        remaining -= self.exact_duplicates
        rows.append(("exact duplicate", self.exact_duplicates, remaining))
        remaining -= self.near_duplicates
        rows.append(("near duplicate", self.near_duplicates, remaining))
        return rows

    def table(self) -> str:
        lines = [f"extract {self.language}: {self.files_found} files, {self.files_parsed} parsed"]
        for pattern in self.unmatched_excludes:
            lines.append(f"  warning: {pattern} matched no path")
        for reason, n in self.files_skipped.items():
            if n:
                lines.append(f"  files skipped ({reason}): {n}")
        width = max(len(r[0]) for r in self.rows())
        lines.append(f"  {'step':<{width}}  {'removed':>8}  {'remaining':>9}")
        for label, removed, remaining in self.rows():
            lines.append(f"  {label:<{width}}  {removed:>8}  {remaining:>9}")
        for split in SPLITS:
            if self.splits[split] or split != "test":
                capped = f", kept {self.subsampled[split]} after the cap" if split in self.subsampled else ""
                lines.append(
                    f"  split {split}: {self.splits[split]} functions from {self.files_per_split[split]} files{capped}"
                )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "language": self.language,
            "files_found": self.files_found,
            "files_parsed": self.files_parsed,
            "files_skipped": dict(self.files_skipped),
            "functions_found": self.functions_found,
            "filtered": dict(self.filtered),
            "exact_duplicates": self.exact_duplicates,
            "near_duplicates": self.near_duplicates,
            "kept": self.kept,
            "splits": dict(self.splits),
            "files_per_split": dict(self.files_per_split),
            "subsampled": dict(self.subsampled),
            "unmatched_excludes": list(self.unmatched_excludes),
        }


@dataclass
class ExtractResult:
    splits: dict[str, list[Record]]
    report: ExtractReport


@dataclass
class _Found:
    """A function seen in a file, before filtering."""

    name: str
    code: str
    docstring: str | None
    start: int  # 1-based line
    end: int
    nested: bool = False
    body_only_docstring: bool = False
    special: bool = False  # a constructor (Java's carry the class's name)


# ---------------------------------------------------------------------------------------------
# Public entry points


def extract(
    sources: Sequence[TreeSource] | TreeSource,
    language: str,
    filters: Filters = Filters(),
    max_per_split: dict[str, int] | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Extract, filter, deduplicate and split the functions of one or more source trees.

    ``max_per_split`` caps a split (``{"train": 4000}``) with a deterministic subsample (a hash
    of each record); the report keeps the count before and after the cap.
    """
    if language not in EXTRACT_LANGUAGES:
        raise DataError(
            f"unsupported language {quote(language)} for extraction: choose one of {', '.join(EXTRACT_LANGUAGES)}"
        )
    if isinstance(sources, TreeSource):
        sources = [sources]
    report = ExtractReport(language)
    candidates = _candidates(_source_files(sources, language, report), language, filters, report, progress)
    records = deduplicate(candidates, filters.near_duplicate_jaccard, report)
    report.kept = len(records)
    splits = split_by_file(records, filters.valid_fraction, filters.test_fraction)
    for split, items in splits.items():
        report.splits[split] = len(items)
        report.files_per_split[split] = len({(r.repo, r.path) for r in items})
    for split, cap in (max_per_split or {}).items():
        if len(splits[split]) > cap:
            splits[split] = subsample(splits[split], cap)
            report.subsampled[split] = cap
    if not records:
        raise DataError(
            f"{', '.join(str(s.root) for s in sources)}: no {language} functions left after filtering "
            f"({report.functions_found} found in {report.files_parsed} files); point --from at a tree with "
            "documented functions"
        )
    return ExtractResult(splits, report)


def _source_files(sources: Sequence[TreeSource], language: str, report: ExtractReport) -> list[tuple[TreeSource, Path]]:
    files: list[tuple[TreeSource, Path]] = []
    for source in sources:
        root = Path(source.root)
        if not root.is_dir():
            raise DataError(
                f"{root}: not a folder; --from must name a source tree to extract {language} functions from"
            )
        files.extend((source, path) for path in _walk(root, language, source, report))
    return files


def _candidates(
    files: list[tuple[TreeSource, Path]], language: str, filters: Filters, report: ExtractReport, progress: bool
) -> list[Record]:
    """Every documented function of ``files`` that passes ``filters``, as records (before deduplication)."""
    candidates: list[Record] = []
    for source, path in progress_bar(
        files, desc=f"extract {language}", unit="file", enabled=progress and len(files) >= 50
    ):
        rel = path.relative_to(source.root).as_posix()
        text = _read_source(path, filters, report)
        if text is None:
            continue
        try:
            found = (
                _python_functions(text, str(path))
                if language == "python"
                else _tree_sitter_functions(text, str(path), language)
            )
        except SyntaxError:
            report.files_skipped["syntax error"] += 1
            continue
        for fn in found:
            report.functions_found += 1
            reason = _filter_reason(fn, language, filters)
            if reason:
                report.filtered[reason] += 1
                continue
            url = source.url_template.format(path=rel, start=fn.start, end=fn.end) if source.url_template else None
            candidates.append(
                Record(source.repo, source.path_prefix + rel, fn.name, language, fn.code, fn.docstring or "", url)
            )
    return candidates


def deduplicate(records: list[Record], threshold: float, report: ExtractReport | None = None) -> list[Record]:
    """Drop exact (whitespace-normalised code) and near (identifier-set Jaccard >= threshold) duplicates.

    The first record of each group, in the given order, is kept.
    """
    seen_exact: set[str] = set()
    unique = []
    for record in records:
        key = hashlib.sha256(" ".join(record.code.split()).encode("utf-8")).hexdigest()
        if key in seen_exact:
            if report:
                report.exact_duplicates += 1
            continue
        seen_exact.add(key)
        unique.append(record)
    kept = []
    index = _NearDuplicateIndex(threshold)
    for record in unique:
        if index.add(record.code):
            kept.append(record)
        elif report:
            report.near_duplicates += 1
    return kept


def split_of(repo: str, path: str, valid_fraction: float, test_fraction: float = 0.0) -> str:
    """The split of every function of file ``repo``/``path``: a hash, so it never changes."""
    digest = hashlib.sha256(f"{repo}\n{path}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < valid_fraction:
        return "valid"
    if u < valid_fraction + test_fraction:
        return "test"
    return "train"


def split_by_file(
    records: Iterable[Record], valid_fraction: float, test_fraction: float = 0.0
) -> dict[str, list[Record]]:
    splits: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for record in records:
        splits[split_of(record.repo, record.path, valid_fraction, test_fraction)].append(record)
    return splits


def record_key(record: Record) -> str:
    return hashlib.sha256(
        "\n".join((record.repo, record.path, record.func_name, record.code)).encode("utf-8")
    ).hexdigest()


def subsample(records: list[Record], n: int) -> list[Record]:
    """``n`` records chosen by a hash of each record, in their original order (deterministic)."""
    chosen = set(sorted(range(len(records)), key=lambda i: record_key(records[i]))[:n])
    return [r for i, r in enumerate(records) if i in chosen]


# ---------------------------------------------------------------------------------------------
# Files


def _is_test_path(rel: str, language: str) -> bool:
    parts = rel.split("/")
    name = parts[-1]
    stem = name.split(".")[0]
    # FooTest.java / FooTest.php: JUnit's and PHPUnit's naming (camel case, so only there)
    camel = language in ("java", "php") and stem.endswith(("Test", "Tests", "TestCase"))
    return (
        any(p in _TEST_DIRS for p in parts[:-1])
        or stem.startswith("test_")
        or stem.endswith(("_test", "_spec"))
        or stem in ("test", "tests", "conftest")
        or ".test." in name
        or ".spec." in name
        or camel
    )


def _matches(rel: str, pattern: str) -> bool:
    """``rel`` (a path relative to the tree's root) is ``pattern``, component by component (fnmatch)."""
    parts, wanted = rel.split("/"), pattern.strip("/").split("/")
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True))


def _walk(root: Path, language: str, source: TreeSource, report: ExtractReport) -> list[Path]:
    out = []
    matched: set[str] = set()

    def hit(rel: str, patterns: tuple[str, ...]) -> bool:
        found = [p for p in patterns if _matches(rel, p)]
        matched.update(found)
        return bool(found)

    def under_include(rel: str, is_dir: bool) -> bool:
        """Inside an included path, or (a folder) on the way to one."""
        if not source.include or hit(rel, source.include):
            return True
        parts = rel.split("/")
        if any(hit("/".join(parts[:i]), source.include) for i in range(1, len(parts))):
            return True
        return is_dir and any(
            len(p.strip("/").split("/")) > len(parts) and _matches(rel, "/".join(p.strip("/").split("/")[: len(parts)]))
            for p in source.include
        )

    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in ("__pycache__", "node_modules", ".git")
            and not hit(prefix + d, source.exclude)
            and under_include(prefix + d, True)
        )
        for name in sorted(filenames):
            if not name.endswith(EXTENSIONS[language]):
                continue
            rel = prefix + name
            if hit(rel, source.exclude) or not under_include(rel, False):
                continue  # named by the caller: not part of the tree
            path = root / rel
            report.files_found += 1
            if _is_test_path(rel, language):
                report.files_skipped["test path"] += 1
            elif name.endswith(".min.js"):
                report.files_skipped["minified"] += 1
            else:
                out.append(path)
    report.unmatched_excludes.extend(f"{root}: {p}" for p in (*source.exclude, *source.include) if p not in matched)
    return out


def _read_source(path: Path, filters: Filters, report: ExtractReport) -> str | None:
    if path.stat().st_size > MAX_SOURCE_BYTES:
        # Counted only when it happens, so reports (and the bundled corpus manifest) keep their keys.
        report.files_skipped["too large"] = report.files_skipped.get("too large", 0) + 1
        return None
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        report.files_skipped["not UTF-8"] += 1
        return None
    text = text.replace("\r\n", "\n")
    if any(len(line) > filters.max_file_line_chars for line in text.split("\n")):
        report.files_skipped["minified"] += 1
        return None
    return text


# ---------------------------------------------------------------------------------------------
# Filters


def docstring_summary(docstring: str) -> str:
    """The first paragraph of a docstring with whitespace collapsed (CodeSearchNet's summary)."""
    paragraph = re.split(r"\n\s*\n", docstring.strip(), maxsplit=1)[0]
    return " ".join(paragraph.split())


def _is_test_name(name: str) -> bool:
    """A word of the (qualified) name starts with ``test``: ``test_x``, ``testFoo``, ``TestCase.run``."""
    words = re.split(r"[._$]+|(?<=[a-z0-9])(?=[A-Z])", name)
    return any(w.lower().startswith("test") for w in words)


def _filter_reason(fn: _Found, language: str, filters: Filters) -> str | None:
    if not fn.docstring:
        return "no_docstring"
    if fn.nested:
        return "nested"
    short = fn.name.rsplit(".", 1)[-1]
    if _is_test_name(fn.name):
        return "test"
    if (
        fn.special
        or (language == "python" and short.startswith("__") and short.endswith("__"))
        or (language == "php" and short.startswith("__"))
        or short in _SPECIAL.get(language, ())
    ):
        return "special"
    n_tokens = len(_WORD.findall(docstring_summary(fn.docstring)))
    if n_tokens < filters.min_docstring_tokens:
        return "docstring_short"
    if n_tokens > filters.max_docstring_tokens:
        return "docstring_long"
    n_lines = fn.code.count("\n") + 1
    if n_lines < filters.min_code_lines:
        return "code_short"
    if n_lines > filters.max_code_lines or len(fn.code) > filters.max_code_chars:
        return "code_long"
    if fn.body_only_docstring:
        return "body_only_docstring"
    return None


class _NearDuplicateIndex:
    """MinHash (64 permutations) + LSH (16 bands of 4) over identifier sets, checked exactly."""

    _PRIME = (1 << 31) - 1
    _BANDS, _ROWS = 16, 4

    def __init__(self, threshold: float):
        rng = np.random.default_rng(20240601)  # fixed: the result must not depend on a seed
        n = self._BANDS * self._ROWS
        self.a = rng.integers(1, self._PRIME, size=n, dtype=np.uint64)[:, None]
        self.b = rng.integers(0, self._PRIME, size=n, dtype=np.uint64)[:, None]
        self.threshold = threshold
        self.buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
        self.sets: list[frozenset[str]] = []

    def add(self, code: str) -> bool:
        """Add ``code`` unless it is a near duplicate of one added before; True if added."""
        tokens = frozenset(_IDENT.findall(code))
        if not tokens:
            tokens = frozenset([code])
        hashes = np.fromiter((zlib.crc32(t.encode("utf-8")) for t in tokens), dtype=np.uint64, count=len(tokens))
        signature = ((self.a * hashes[None, :] + self.b) % self._PRIME).min(axis=1)
        keys = [(band, signature[band * self._ROWS : (band + 1) * self._ROWS].tobytes()) for band in range(self._BANDS)]
        checked: set[int] = set()
        for key in keys:
            for other in self.buckets.get(key, ()):
                if other in checked:
                    continue
                checked.add(other)
                theirs = self.sets[other]
                if len(tokens & theirs) >= self.threshold * len(tokens | theirs):
                    return False
        index = len(self.sets)
        self.sets.append(tokens)
        for key in keys:
            self.buckets[key].append(index)
        return True


# ---------------------------------------------------------------------------------------------
# Python


def _python_functions(text: str, filename: str) -> list[_Found]:
    tree = ast.parse(text, filename=filename)
    lines = text.split("\n")
    found: list[_Found] = []

    def visit(node: ast.AST, prefix: str, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(child, clean=True)
                body_only = doc is not None and len(child.body) == 1
                first = lines[child.lineno - 1]
                indent = len(first.encode("utf-8")[: child.col_offset].decode("utf-8", errors="ignore"))
                code = _dedent_block(lines[child.lineno - 1 : child.end_lineno], indent)
                found.append(
                    _Found(
                        prefix + child.name,
                        code,
                        doc,
                        child.lineno,
                        child.end_lineno or child.lineno,
                        in_function,
                        body_only,
                    )
                )
                visit(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", in_function)
            elif isinstance(child, ast.stmt):
                visit(child, prefix, in_function)

    visit(tree, "", False)
    return found


def _dedent_block(lines: list[str], indent: int) -> str:
    """Remove the first line's indentation (``indent`` columns) from every line that has it."""
    if indent:
        prefix = lines[0][:indent]
        if not prefix.strip():
            lines = [line[indent:] if line.startswith(prefix) else line for line in lines]
        else:
            lines = [lines[0][indent:], *lines[1:]]
    return "\n".join(line.rstrip() for line in lines).strip("\n")


# ---------------------------------------------------------------------------------------------
# Tree-sitter languages: JavaScript, Go, Java, PHP, Ruby

_PARSERS: dict[str, object] = {}
_FUNCTION_VALUES = {"function_expression", "function", "arrow_function", "generator_function"}
_COMMENTS = {"comment", "line_comment", "block_comment"}  # tree-sitter-java names its two kinds apart
_FUNCTION_NODES = {
    "go": {"function_declaration", "method_declaration"},
    "ruby": {"method", "singleton_method"},
    "php": {"function_definition", "method_declaration"},
    "java": {"method_declaration", "constructor_declaration"},
}
_OWNER_NODES = {
    "ruby": {"class", "module"},
    "php": {"class_declaration", "interface_declaration", "trait_declaration", "enum_declaration"},
    "java": {"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"},
}
_INLINE_TAG = re.compile(r"\{@(\w+)(?:\s+([^}]*))?\}")
_LINK_TAGS = {"link", "linkcode", "linkplain", "see"}
# Comment lines that steer a tool rather than describe the function (eslint, istanbul, TypeScript,
# rubocop, Go compiler directives, Ruby magic comments): never part of a docstring.
_DIRECTIVE = re.compile(
    r"^(?:eslint|istanbul |c8 |jshint|jscs:|global |exported |prettier-ignore|@ts-|rubocop:|"
    r"go:|nolint|line \S|export \w|extern \w|frozen_string_literal:|-\*-|TODO|FIXME|XXX)"
)


def _ts_parser(language: str):
    if (
        language not in _PARSERS
    ):  # built once per language: loading a grammar takes time, a parser keeps no state between parses
        import importlib

        import tree_sitter

        try:
            module = importlib.import_module(f"tree_sitter_{language}")
        except ImportError:
            raise DataError(
                f"extracting {language} needs its tree-sitter grammar: pip install tree-sitter-{language}"
            ) from None
        # A PHP file starts with <?php and may hold HTML around the code: the full grammar, not php_only.
        make = module.language_php if language == "php" else module.language
        _PARSERS[language] = tree_sitter.Parser(tree_sitter.Language(make()))
    return _PARSERS[language]


def render_inline_tags(text: str) -> str:
    """JSDoc / Javadoc / PHPDoc inline tags as plain text.

    ``{@link Foo}`` -> ``Foo``; ``{@link Foo|the foo}`` and ``{@link Foo the foo}`` -> ``the foo``;
    ``{@code a + b}`` -> ``a + b``; ``{@inheritDoc}`` -> nothing.
    """

    def plain(match: re.Match) -> str:
        tag, body = match.group(1).lower(), (match.group(2) or "").strip()
        if tag in _LINK_TAGS:
            if "|" in body:
                return body.split("|", 1)[1].strip()
            target, _, label = body.partition(" ")
            return label.strip() or target.lstrip("#")  # {@link #get()}: a member of this class
        return body

    return _INLINE_TAG.sub(plain, text)


def _before_tags(lines: Iterable[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split doc-comment lines (markers removed) into the lead text and the text of each ``@tag``."""
    lead: list[str] = []
    tags: dict[str, list[str]] = {}
    current = lead
    for s in lines:
        stripped = s.lstrip()
        if stripped.startswith("@"):
            tag, _, rest = stripped[1:].partition(" ")
            current = tags.setdefault(tag.strip(), []) if tag not in tags else []
            current.append(rest.strip())
            continue
        current.append(s.rstrip())
    return lead, tags


def jsdoc_description(comment: str) -> str:
    """The description of a ``/** ... */`` comment: its text before the first ``@tag`` line.

    When that is empty, the text of an ``@description`` (or ``@desc``) tag, else of a
    ``@summary`` tag, is used (date-fns writes its docs that way). Inline tags (``{@link X}``)
    become text. The same rules read Javadoc and PHPDoc.
    """
    body = comment[3:-2] if comment.endswith("*/") else comment[3:]
    lines = []
    for line in body.split("\n"):
        s = line.strip()
        if s.startswith("*"):
            s = s[1:]
            if s.startswith(" "):
                s = s[1:]
        lines.append(s)
    lead, tags = _before_tags(lines)
    for part in (lead, tags.get("description"), tags.get("desc"), tags.get("summary")):
        text = render_inline_tags("\n".join(part or [])).strip()
        if text:
            return text
    return ""


def line_comment_description(comments: Sequence[str]) -> str:
    """The docstring of a block of ``//`` or ``#`` comment lines: their text before the first ``@tag``.

    Tool directives (``// eslint-disable-line``, ``//go:noinline``, ``# rubocop:disable``) are left
    out; a block marked ``:nodoc:`` (Ruby) has no docstring.
    """
    lines = []
    for comment in comments:
        text = comment[2:] if comment.startswith("//") else comment[1:]
        if text.startswith(" "):
            text = text[1:]
        if _DIRECTIVE.match(text):
            continue
        if ":nodoc:" in text:
            return ""
        lines.append(text)
    lead, _ = _before_tags(lines)
    return render_inline_tags("\n".join(lead)).strip()


def _text(node, data: bytes) -> str:
    return data[node.start_byte : node.end_byte].decode("utf-8")


def _starts_line(node, data: bytes) -> bool:
    line_start = data.rfind(b"\n", 0, node.start_byte) + 1
    return not data[line_start : node.start_byte].strip()


def _leading_doc(anchor, data: bytes) -> str | None:
    """The docstring in the comments right before ``anchor``, or None.

    A ``/** ... */`` comment (JSDoc, Javadoc, PHPDoc), or else a block of line comments (``//``,
    ``#``), each on its own line, the last one on the line right before ``anchor`` and no blank
    line between them (Go's and Ruby's convention, and common in JavaScript).
    """
    while anchor.prev_sibling is None and anchor.parent is not None and anchor.parent.start_byte == anchor.start_byte:
        anchor = anchor.parent  # Ruby: a class's first method starts the class's body node; the comment is before that
    comment = anchor.prev_sibling
    if comment is None or comment.type not in _COMMENTS:
        return None
    text = _text(comment, data)
    if text.startswith("/**"):
        return jsdoc_description(text) if not data[comment.end_byte : anchor.start_byte].strip() else None
    block: list[str] = []
    below = anchor
    while (
        comment is not None
        and comment.type in _COMMENTS
        and _starts_line(comment, data)
        and comment.end_point[0] + 1 == below.start_point[0]
    ):
        text = _text(comment, data)
        if not text.startswith(("//", "#")):
            break
        block.append(text)
        below, comment = comment, comment.prev_sibling
    return line_comment_description(block[::-1]) if block else None


def _tree_sitter_functions(text: str, filename: str, language: str) -> list[_Found]:
    data = text.encode("utf-8")
    tree = _ts_parser(language).parse(data)
    if tree.root_node.has_error:
        raise SyntaxError(f"{filename}: tree-sitter could not parse the file")
    function = _js_function if language == "javascript" else _declared_function
    found: list[_Found] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        item = function(node, data, language)
        if item is not None:
            found.append(item)
        stack.extend(reversed(node.children))
    return found


def _code_of(decl, data: bytes) -> str:
    line_start = data.rfind(b"\n", 0, decl.start_byte) + 1
    indent = len(data[line_start : decl.start_byte].decode("utf-8"))
    return _dedent_block(data[line_start : decl.end_byte].decode("utf-8").split("\n"), indent)


def _owners(node, data: bytes, language: str) -> tuple[list[str], bool]:
    """Names of the enclosing classes / modules, outermost first, and whether a function encloses the node."""
    names, nested = [], False
    parent = node.parent
    while parent is not None:
        if parent.type in _OWNER_NODES.get(language, ()):
            name = parent.child_by_field_name("name")
            if name is not None:
                names.append(_text(name, data))
        elif parent.type in _FUNCTION_NODES[language]:
            nested = True
        parent = parent.parent
    return names[::-1], nested


def _go_receiver(node, data: bytes) -> str | None:
    receiver = node.child_by_field_name("receiver")
    param = next((c for c in receiver.named_children if c.type == "parameter_declaration"), None) if receiver else None
    kind = param.child_by_field_name("type") if param is not None else None
    if kind is None:
        return None
    return _text(kind, data).lstrip("*").split("[", 1)[0].strip()  # (s *Stack[T]) -> Stack


def _declared_function(node, data: bytes, language: str) -> _Found | None:
    """A Go / Ruby / PHP / Java function or method declaration, named ``Owner.name``."""
    if node.type not in _FUNCTION_NODES[language]:
        return None
    name_node = node.child_by_field_name("name")
    if name_node is None:
        return None
    name = _text(name_node, data)
    owners, nested = _owners(node, data, language)
    if language == "go" and node.type == "method_declaration":
        owners = [r for r in [_go_receiver(node, data)] if r]
    special = node.type == "constructor_declaration"
    return _found_at(".".join([*owners, name]), node, node, data, nested, special)


def _wraps_function(node) -> bool:
    """``wrapper(function name(...) {...})``, e.g. ramda's ``var add = _curry2(function add(a, b) {...})``."""
    if node.type != "call_expression":
        return False
    args = node.child_by_field_name("arguments")
    return args is not None and any(a.type in _FUNCTION_VALUES for a in args.named_children)


def _js_function(node, data: bytes, language: str = "javascript") -> _Found | None:
    kind = node.type
    if kind in ("function_declaration", "generator_function_declaration"):
        name_node = node.child_by_field_name("name")
        decl = node
    elif kind == "method_definition":
        name_node = node.child_by_field_name("name")
        decl = node
    elif kind == "variable_declarator":
        value = node.child_by_field_name("value")
        if value is None or not (value.type in _FUNCTION_VALUES or _wraps_function(value)):
            return None
        name_node = node.child_by_field_name("name")
        parent = node.parent
        decl = parent if parent is not None and parent.named_child_count == 1 else node
    elif kind == "assignment_expression":
        value = node.child_by_field_name("right")
        if (
            value is None
            or value.type not in _FUNCTION_VALUES
            or node.parent is None
            or node.parent.type != "expression_statement"
        ):
            return None
        name_node = node.child_by_field_name("left")
        decl = node.parent
    elif kind == "pair":
        value = node.child_by_field_name("value")
        if value is None or value.type not in _FUNCTION_VALUES:
            return None
        name_node = node.child_by_field_name("key")
        decl = node
    else:
        return None
    if name_node is None:
        return None
    name = _text(name_node, data)
    if kind == "method_definition":
        owner = node.parent.parent if node.parent is not None else None
        if owner is not None and owner.type in ("class_declaration", "class"):
            owner_name = owner.child_by_field_name("name")
            if owner_name is not None:
                name = f"{_text(owner_name, data)}.{name}"
    anchor = decl.parent if decl.parent is not None and decl.parent.type == "export_statement" else decl
    nested = False  # nested JavaScript functions are kept: library code often lives in one closure
    return _found_at(name, decl, anchor, data, nested)


def _found_at(name: str, node, doc_anchor, data: bytes, nested: bool, special: bool = False) -> _Found:
    """The function ``name`` at tree-sitter ``node``, its docstring the comment before ``doc_anchor``."""
    return _Found(
        name,
        _code_of(node, data),
        _leading_doc(doc_anchor, data),
        node.start_point[0] + 1,
        node.end_point[0] + 1,
        nested,
        False,
        special,
    )
