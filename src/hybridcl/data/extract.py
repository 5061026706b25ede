"""Build function records from a source tree, the way CodeSearchNet built its corpus.

Python is parsed with :mod:`ast` (functions and methods that have a docstring); JavaScript with
tree-sitter (function declarations, class methods, named function / arrow expressions and object
methods preceded by a ``/** ... */`` JSDoc comment; the docstring is the description before the
first ``@tag``).

Then, in this order, and every step counted in an :class:`ExtractReport`:

1. files: test files and folders, minified files, non-UTF-8 files and files that do not parse
   are skipped (counted per reason);
2. functions: no docstring, nested inside another function (Python), test functions (name
   contains ``test``), constructors and standard methods (``__init__``, ``__str__``,
   ``constructor``, ``toString``...), docstring summary shorter than 3 or longer than 256 word
   tokens, code shorter than 3 lines or longer than the limits, body that is only the docstring;
3. exact duplicates (same code up to whitespace) and near duplicates (Jaccard similarity of the
   identifier sets >= 0.8, found with MinHash + LSH and then checked exactly); the first in
   (source, path, line) order is kept;
4. a split **by file**: the split of a function is decided by a hash of ``repo`` + ``path``, so no
   file is in two splits and the same file always lands in the same split.
"""
from __future__ import annotations

import ast
import hashlib
import os
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hybridcl.data.records import Record
from hybridcl.errors import DataError

EXTRACT_LANGUAGES = ("python", "javascript")
SPLITS = ("train", "valid", "test")
_EXTENSIONS = {"python": (".py",), "javascript": (".js", ".mjs", ".cjs")}
_TEST_DIRS = {"test", "tests", "idle_test", "__tests__", "testing", "spec", "specs"}
_SPECIAL_JS = {"constructor", "toString", "valueOf", "toJSON", "toLocaleString"}
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
    ``exclude`` holds top-level folder or file names (relative to ``root``) to leave out; they are
    not walked and not counted (e.g. ``site-packages`` inside a stdlib folder).
    """

    root: str
    repo: str
    path_prefix: str = ""
    url_template: str | None = None
    exclude: tuple[str, ...] = ()


@dataclass
class ExtractReport:
    """Counts at each step of an extraction."""

    language: str
    files_found: int = 0
    files_skipped: dict[str, int] = field(default_factory=lambda: {"test path": 0, "minified": 0, "not UTF-8": 0, "syntax error": 0})
    functions_found: int = 0
    filtered: dict[str, int] = field(default_factory=lambda: {key: 0 for key, _ in FILTER_STEPS})
    exact_duplicates: int = 0
    near_duplicates: int = 0
    kept: int = 0
    splits: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    files_per_split: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    subsampled: dict[str, int] = field(default_factory=dict)  # split -> examples left after a cap

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
                lines.append(f"  split {split}: {self.splits[split]} functions from {self.files_per_split[split]} files{capped}")
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


# ---------------------------------------------------------------------------------------------
# Public entry points

def extract(sources: Sequence[TreeSource] | TreeSource, language: str, filters: Filters = Filters(),
            max_per_split: dict[str, int] | None = None, progress: bool = True) -> ExtractResult:
    """Extract, filter, deduplicate and split the functions of one or more source trees.

    ``max_per_split`` caps a split (``{"train": 4000}``) with a deterministic subsample (a hash
    of each record); the report keeps the count before and after the cap.
    """
    if language not in EXTRACT_LANGUAGES:
        raise DataError(f"unsupported language {language!r} for extraction: choose one of {', '.join(EXTRACT_LANGUAGES)}")
    if isinstance(sources, TreeSource):
        sources = [sources]
    report = ExtractReport(language)
    files = []
    for source in sources:
        root = Path(source.root)
        if not root.is_dir():
            raise DataError(f"{root}: not a folder; --from must name a source tree to extract {language} functions from")
        files.extend((source, path) for path in _walk(root, language, source, report))
    parse = _python_functions if language == "python" else _javascript_functions
    candidates: list[Record] = []
    for source, path in tqdm(files, desc=f"extract {language}", unit="file", disable=not progress or len(files) < 50):
        rel = path.relative_to(source.root).as_posix()
        text = _read_source(path, filters, report)
        if text is None:
            continue
        try:
            found = parse(text, str(path))
        except SyntaxError:
            report.files_skipped["syntax error"] += 1
            continue
        for fn in found:
            report.functions_found += 1
            reason = _filter_reason(fn, rel, language, filters)
            if reason:
                report.filtered[reason] += 1
                continue
            url = source.url_template.format(path=rel, start=fn.start, end=fn.end) if source.url_template else None
            candidates.append(Record(source.repo, source.path_prefix + rel, fn.name, language, fn.code, fn.docstring or "", url))
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
        raise DataError(f"{', '.join(str(s.root) for s in sources)}: no {language} functions left after filtering "
                        f"({report.functions_found} found in {report.files_parsed} files); point --from at a tree with documented functions")
    return ExtractResult(splits, report)


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
    digest = hashlib.sha256(f"{repo}\n{path}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < valid_fraction:
        return "valid"
    if u < valid_fraction + test_fraction:
        return "test"
    return "train"


def split_by_file(records: Iterable[Record], valid_fraction: float, test_fraction: float = 0.0) -> dict[str, list[Record]]:
    splits: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for record in records:
        splits[split_of(record.repo, record.path, valid_fraction, test_fraction)].append(record)
    return splits


def record_key(record: Record) -> str:
    return hashlib.sha256("\n".join((record.repo, record.path, record.func_name, record.code)).encode("utf-8")).hexdigest()


def subsample(records: list[Record], n: int) -> list[Record]:
    """``n`` records chosen by a hash of each record, in their original order (deterministic)."""
    chosen = set(sorted(range(len(records)), key=lambda i: record_key(records[i]))[:n])
    return [r for i, r in enumerate(records) if i in chosen]


# ---------------------------------------------------------------------------------------------
# Files

def _is_test_path(rel: str) -> bool:
    parts = rel.split("/")
    name = parts[-1]
    stem = name.split(".")[0]
    return (any(p in _TEST_DIRS for p in parts[:-1]) or stem.startswith("test_") or stem.endswith("_test")
            or stem in ("test", "tests", "conftest") or ".test." in name or ".spec." in name)


def _walk(root: Path, language: str, source: TreeSource, report: ExtractReport) -> list[Path]:
    out = []
    exclude = set(source.exclude)
    for dirpath, dirnames, filenames in os.walk(root):
        top = Path(dirpath) == root
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "node_modules", ".git") and not (top and d in exclude))
        for name in sorted(filenames):
            if not name.endswith(_EXTENSIONS[language]):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            report.files_found += 1
            if rel in exclude:
                continue  # named by the caller: not part of the tree
            if _is_test_path(rel):
                report.files_skipped["test path"] += 1
            elif name.endswith(".min.js"):
                report.files_skipped["minified"] += 1
            else:
                out.append(path)
    return out


def _read_source(path: Path, filters: Filters, report: ExtractReport) -> str | None:
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


def _filter_reason(fn: _Found, rel: str, language: str, filters: Filters) -> str | None:
    if not fn.docstring:
        return "no_docstring"
    if fn.nested:
        return "nested"
    short = fn.name.rsplit(".", 1)[-1]
    if _is_test_name(fn.name):
        return "test"
    if (language == "python" and short.startswith("__") and short.endswith("__")) or (language == "javascript" and short in _SPECIAL_JS):
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
        keys = [(band, signature[band * self._ROWS:(band + 1) * self._ROWS].tobytes()) for band in range(self._BANDS)]
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
                indent = len(first.encode("utf-8")[:child.col_offset].decode("utf-8", errors="ignore"))
                code = _dedent_block(lines[child.lineno - 1:child.end_lineno], indent)
                found.append(_Found(prefix + child.name, code, doc, child.lineno, child.end_lineno, in_function, body_only))
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
# JavaScript

_JS_PARSER = None
_FUNCTION_VALUES = {"function_expression", "function", "arrow_function", "generator_function"}


def _js_parser():
    global _JS_PARSER  # the parser is stateless between parses; built once because loading takes time
    if _JS_PARSER is None:
        import tree_sitter
        import tree_sitter_javascript

        _JS_PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_javascript.language()))
    return _JS_PARSER


def jsdoc_description(comment: str) -> str:
    """The description of a ``/** ... */`` comment: its text before the first ``@tag`` line.

    When that is empty, the text of an ``@description`` (or ``@desc``) tag, else of a
    ``@summary`` tag, is used (date-fns writes its docs that way).
    """
    body = comment[3:-2] if comment.endswith("*/") else comment[3:]
    lead: list[str] = []
    tags: dict[str, list[str]] = {}
    current = lead
    for line in body.split("\n"):
        s = line.strip()
        if s.startswith("*"):
            s = s[1:]
            if s.startswith(" "):
                s = s[1:]
        stripped = s.lstrip()
        if stripped.startswith("@"):
            tag, _, rest = stripped[1:].partition(" ")
            current = tags.setdefault(tag.strip(), []) if tag not in tags else []
            current.append(rest.strip())
            continue
        current.append(s.rstrip())
    for part in (lead, tags.get("description"), tags.get("desc"), tags.get("summary")):
        text = "\n".join(part or []).strip()
        if text:
            return text
    return ""


def _javascript_functions(text: str, filename: str) -> list[_Found]:
    data = text.encode("utf-8")
    tree = _js_parser().parse(data)
    if tree.root_node.has_error:
        raise SyntaxError(f"{filename}: tree-sitter could not parse the file")
    found: list[_Found] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        item = _js_function(node, data)
        if item is not None:
            found.append(item)
        stack.extend(reversed(node.children))
    return found


def _wraps_function(node) -> bool:
    """``wrapper(function name(...) {...})``, e.g. ramda's ``var add = _curry2(function add(a, b) {...})``."""
    if node.type != "call_expression":
        return False
    args = node.child_by_field_name("arguments")
    return args is not None and any(a.type in _FUNCTION_VALUES for a in args.named_children)


def _js_function(node, data: bytes) -> _Found | None:
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
        if value is None or value.type not in _FUNCTION_VALUES or node.parent is None or node.parent.type != "expression_statement":
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
    name = data[name_node.start_byte:name_node.end_byte].decode("utf-8")
    if kind == "method_definition":
        owner = node.parent.parent if node.parent is not None else None
        if owner is not None and owner.type in ("class_declaration", "class"):
            owner_name = owner.child_by_field_name("name")
            if owner_name is not None:
                name = f"{data[owner_name.start_byte:owner_name.end_byte].decode('utf-8')}.{name}"
    anchor = decl.parent if decl.parent is not None and decl.parent.type == "export_statement" else decl
    comment = anchor.prev_sibling
    doc = None
    if comment is not None and comment.type == "comment":
        comment_text = data[comment.start_byte:comment.end_byte].decode("utf-8")
        between = data[comment.end_byte:anchor.start_byte]
        if comment_text.startswith("/**") and not between.strip():
            doc = jsdoc_description(comment_text)
    line_start = data.rfind(b"\n", 0, decl.start_byte) + 1
    indent = len(data[line_start:decl.start_byte].decode("utf-8"))
    block = data[line_start:decl.end_byte].decode("utf-8").split("\n")
    code = _dedent_block(block, indent)
    nested = False  # nested JavaScript functions are kept: library code often lives in one closure
    return _Found(name, code, doc, decl.start_point[0] + 1, decl.end_point[0] + 1, nested, False)
