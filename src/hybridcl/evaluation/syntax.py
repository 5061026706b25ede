"""Syntactic pass rate (the seed's "Pass Rate"): the share of generated code that parses.

A program passes when tree-sitter's parse tree has no ERROR node and no MISSING node (tree-sitter
recovers from errors by inserting those; ``Node.has_error`` is true for both). Blank output
(empty or whitespace only) counts as a failure: an empty generation is not a function, although
it is a valid empty program. Grammars are the installed ``tree_sitter_<lang>`` modules, found at
run time, so ``pip install tree-sitter-go`` adds ``go``. For Python, ``ast.parse`` gives a second
opinion (``syntax_pass_rate_ast``); the two can differ, e.g. on code valid only in a newer Python.

A method is not a program on its own: JavaScript's ``name(a) {...}``, ``static``, ``get``/``set``
and PHP's ``public function f()`` parse only inside a class body, so code that fails alone is
checked again as the only member of a class (Java's grammar takes a method alone). PHP is parsed
with the code-only grammar (no ``<?php`` needed; one at the start is allowed): the full grammar
reads text outside ``<?php`` as HTML and would pass anything. :func:`syntax_ceiling` is the
pass rate of the references themselves, the most a model can be expected to reach.
"""

from __future__ import annotations

import ast
import functools
import importlib
import pkgutil
import re
import warnings
from collections.abc import Sequence

from hybridcl.errors import ConfigError, quote

_ALIASES = {
    "py": "python",
    "js": "javascript",
    "ts": "typescript",
    "csharp": "c_sharp",
    "c#": "c_sharp",
    "c++": "cpp",
    "golang": "go",
}
_NOT_GRAMMARS = {"tree_sitter_languages", "tree_sitter_language_pack"}
_ENTRY = {"php": "language_php_only", "typescript": "language_typescript"}  # grammars with several entry points
_CLASS_BODY = {
    "javascript": ("class _ {\n", "\n}"),
    "typescript": ("class _ {\n", "\n}"),
    "php": ("class _ {\n", "\n}"),
    "java": ("class _ {\n", "\n}"),
}
_PHP_OPEN = re.compile(r"\A\s*<\?php\b")


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
            names.add(mod.name[len("tree_sitter_") :])
    return sorted(names)


@functools.cache
def _parser(language: str):
    import tree_sitter

    lang = canonical_language(language)
    if lang not in supported_languages():
        raise ConfigError(
            f"no tree-sitter grammar for language {quote(language)}: pip install tree-sitter-{lang.replace('_', '-')} "
            f"(installed: {', '.join(supported_languages()) or 'none'})"
        )
    module = importlib.import_module(f"tree_sitter_{lang}")
    # Most grammars export language(); a few export language_<name>() (php, typescript: tsx too).
    fn = getattr(module, _ENTRY.get(lang, "language"), None) or getattr(module, f"language_{lang}", None)
    if fn is None:
        raise ConfigError(f"tree_sitter_{lang} exports no language() function")
    with warnings.catch_warnings():  # older grammar wheels return an int pointer (deprecated)
        warnings.simplefilter("ignore", DeprecationWarning)
        return tree_sitter.Parser(tree_sitter.Language(fn()))


def parses(code: str, language: str) -> bool:
    """True when ``code`` is non-blank and parses with no ERROR or MISSING node, alone or as a class member."""
    if not code.strip():
        return False
    lang = canonical_language(language)
    parser = _parser(lang)
    if lang == "php":
        code = _PHP_OPEN.sub("", code, count=1)
    if not parser.parse(code.encode("utf-8")).root_node.has_error:
        return True
    if lang not in _CLASS_BODY:
        return False
    head, tail = _CLASS_BODY[lang]
    root = parser.parse(f"{head}{code}{tail}".encode()).root_node
    # one class and nothing else: "a() {}\n}\nclass B {" must not pass by closing the wrapper early
    return not root.has_error and root.named_child_count == 1


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


def syntax_ceiling(references: Sequence[str], language: str) -> float:
    """Percent (0-100) of a task's reference functions that pass :func:`parses`: the ceiling for its models.

    Below 100 when the references themselves hold code the grammar rejects (newer syntax than the
    grammar knows, fragments cut out of a larger construct).
    """
    return syntax_pass_rate(references, language)


def syntax_pass_rate_ast(codes: Sequence[str]) -> float:
    """Percent (0-100) of ``codes`` that Python's ``ast`` parses."""
    return _rate([parses_ast(c) for c in codes])


def ast_agreement(codes: Sequence[str]) -> float:
    """Percent (0-100) of Python ``codes`` on which tree-sitter and ``ast`` give the same verdict."""
    return _rate([parses(c, "python") == parses_ast(c) for c in codes])


# ---- the seed's check (hybrid_experiment.py at 9a2e462, evaluate_model), kept only to compare ----------
_SEED_PYTHON_CUES = ("def ", "import ", "class ", "print(")
_SEED_JAVASCRIPT_CUES = ("function ", "var ", "let ", "const ", "console.")


def passes_seed(prediction: str, reference: str, language: str) -> bool:
    """The seed's "pass": not a parse of the language, kept only to compare with its numbers.

    As the seed wrote it: a blank prediction fails; if ``language`` is Python or the lower-cased
    *reference* contains ``def ``, ``import ``, ``class `` or ``print(``, the prediction must
    ``compile(..., "exec")`` (so a JavaScript task whose reference mentions ``class `` is checked
    as Python); else, for JavaScript (or a reference with ``function ``, ``var ``, ...), it passes
    when it contains both ``{`` and ``}``; any other output passes. ``compile`` only compiles:
    nothing runs.
    """
    if not prediction or not prediction.strip():
        return False
    ref = reference.lower()
    try:
        if language == "python" or any(cue in ref for cue in _SEED_PYTHON_CUES):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarning on e.g. invalid escapes: the seed ignored them too
                compile(prediction, "<string>", "exec")
            return True
        if language == "javascript" or any(cue in ref for cue in _SEED_JAVASCRIPT_CUES):
            return "{" in prediction and "}" in prediction
        return True
    except Exception:  # noqa: BLE001 - the seed's bare except: SyntaxError, ValueError (NUL), RecursionError
        return False


def syntax_pass_rate_seed(predictions: Sequence[str], references: Sequence[str], language: str) -> float:
    """Percent (0-100) of predictions that pass :func:`passes_seed` (the seed's "Pass Rate" x 100)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    return _rate([passes_seed(p, r, language) for p, r in zip(predictions, references, strict=True)])
