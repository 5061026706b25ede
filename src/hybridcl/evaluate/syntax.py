"""Syntactic pass rate (the seed's "Pass Rate"): the share of generated code that parses.

A program passes when tree-sitter's parse tree has no ERROR node and no MISSING node (tree-sitter
recovers from errors by inserting those; ``Node.has_error`` is true for both). Blank output
(empty or whitespace only) counts as a failure: an empty generation is not a function, although
it is a valid empty program. Grammars are the installed ``tree_sitter_<lang>`` modules, found at
run time, so ``pip install tree-sitter-go`` adds ``go``. For Python, ``ast.parse`` gives a second
opinion (``syntax_pass_rate_ast``); the two can differ, e.g. on code valid only in a newer Python.
"""

from __future__ import annotations

import ast
import functools
import importlib
import pkgutil
import warnings
from typing import Sequence

from hybridcl.errors import ConfigError

_ALIASES = {"py": "python", "js": "javascript", "ts": "typescript", "csharp": "c_sharp", "c#": "c_sharp",
            "c++": "cpp", "golang": "go"}
_NOT_GRAMMARS = {"tree_sitter_languages", "tree_sitter_language_pack"}


def canonical_language(language: str) -> str:
    """``"JS"`` -> ``"javascript"``; names follow the ``tree_sitter_<name>`` modules."""
    lang = language.strip().lower()
    return _ALIASES.get(lang, lang)


@functools.cache
def supported_languages() -> list[str]:
    """Languages with an installed tree-sitter grammar module, sorted (e.g. ["javascript", "python"])."""
    names = set()
    for mod in pkgutil.iter_modules():
        if mod.name.startswith("tree_sitter_") and mod.name not in _NOT_GRAMMARS:
            names.add(mod.name[len("tree_sitter_"):])
    return sorted(names)


@functools.cache
def _parser(language: str):
    import tree_sitter

    lang = canonical_language(language)
    if lang not in supported_languages():
        raise ConfigError(
            f"no tree-sitter grammar for language {language!r}: pip install tree-sitter-{lang.replace('_', '-')} "
            f"(installed: {', '.join(supported_languages()) or 'none'})"
        )
    module = importlib.import_module(f"tree_sitter_{lang}")
    # Most grammars export language(); a few export language_<name>() (php, typescript: tsx too).
    fn = getattr(module, "language", None) or getattr(module, f"language_{lang}", None)
    if fn is None:
        raise ConfigError(f"tree_sitter_{lang} exports no language() function")
    with warnings.catch_warnings():  # older grammar wheels return an int pointer (deprecated)
        warnings.simplefilter("ignore", DeprecationWarning)
        return tree_sitter.Parser(tree_sitter.Language(fn()))


def parses(code: str, language: str) -> bool:
    """True when ``code`` is non-blank and parses with no ERROR or MISSING node."""
    if not code.strip():
        return False
    tree = _parser(canonical_language(language)).parse(code.encode("utf-8"))
    return not tree.root_node.has_error


def parses_ast(code: str) -> bool:
    """True when ``code`` is non-blank Python that ``ast.parse`` accepts (this interpreter's grammar)."""
    if not code.strip():
        return False
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: NUL bytes
        return False
    return True


def _rate(flags: Sequence[bool]) -> float:
    if not flags:
        raise ValueError("no code to check")
    return 100.0 * sum(flags) / len(flags)


def syntax_pass_rate(codes: Sequence[str], language: str) -> float:
    """Percent (0-100) of ``codes`` that tree-sitter parses cleanly."""
    return _rate([parses(c, language) for c in codes])


def syntax_pass_rate_ast(codes: Sequence[str]) -> float:
    """Percent (0-100) of ``codes`` that Python's ``ast`` parses."""
    return _rate([parses_ast(c) for c in codes])


def ast_agreement(codes: Sequence[str]) -> float:
    """Percent (0-100) of Python ``codes`` on which tree-sitter and ``ast`` give the same verdict."""
    return _rate([parses(c, "python") == parses_ast(c) for c in codes])
