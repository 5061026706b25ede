import pytest

from hybridcl.errors import ConfigError
from hybridcl.evaluation.syntax import (
    _parser,
    ast_agreement,
    parses,
    parses_ast,
    supported_languages,
    syntax_ceiling,
    syntax_pass_rate,
    syntax_pass_rate_ast,
)


def _has_missing(node) -> bool:
    return node.is_missing or any(_has_missing(c) for c in node.children)


def test_supported_languages_found_dynamically():
    langs = supported_languages()
    assert "python" in langs and "javascript" in langs


@pytest.mark.parametrize(
    "code,ok",
    [
        ("def f(a, b):\n    return a + b\n", True),
        ("def f(:\n    pass\n", False),
        ("def f(x):\n    return x +", False),
        ("", False),
        ("   \n", False),
    ],
)
def test_python(code, ok):
    assert parses(code, "python") is ok
    assert parses_ast(code) is ok


@pytest.mark.parametrize(
    "code,ok",
    [
        ("function f(a) { return a + 1; }", True),
        ("const g = (x) => x * 2;", True),
        ("function f(a) { return a + ", False),
        ("const x = {a: 1", False),
    ],
)
def test_javascript(code, ok):
    assert parses(code, "javascript") is ok
    assert parses(code, "js") is ok


def test_missing_node_counts_as_failure():
    code = "function f(a) { if (a { return 1; } }"
    tree = _parser("javascript").parse(code.encode())
    code2 = "def f(x):\n    return (x + 1\n"
    tree2 = _parser("python").parse(code2.encode())
    # at least one of these recovers with a MISSING node; both must fail
    assert _has_missing(tree.root_node) or _has_missing(tree2.root_node)
    assert not parses(code, "javascript") and not parses(code2, "python")


def test_rates_and_ast_agreement():
    codes = ["x = 1\n", "print 'py2'\n", "def f(:\n", "y = [1, 2]\n"]
    assert syntax_pass_rate(codes, "python") == 75.0  # tree-sitter's grammar still accepts print 'x'
    assert syntax_pass_rate_ast(codes) == 50.0
    assert ast_agreement(codes) == 75.0


def test_unknown_language_is_a_config_error():
    with pytest.raises(ConfigError, match="tree-sitter-cobol"):
        parses("x", "cobol")
    with pytest.raises(ValueError):
        syntax_pass_rate([], "python")


@pytest.mark.parametrize(
    "code,ok",
    [
        ("push(item) {\n  this.items.push(item);\n}", True),  # a class method, checked inside a class body
        ("static of(x) {\n  return new Stack(x);\n}", True),
        ("get size() {\n  return this.n;\n}", True),
        ("async *walk(node) {\n  yield node;\n}", True),
        ("push(item) {\n  this.items.push(item;\n}", False),
        ("a() {}\n}\nclass B {", False),  # would pass only by closing the wrapping class early
    ],
)
def test_javascript_methods(code, ok):
    assert parses(code, "javascript") is ok


@pytest.mark.parametrize(
    "language,code,ok",
    [
        ("go", "func Add(a, b int) int {\n\treturn a + b\n}", True),
        ("go", "func (s *Stack) Len() int {\n\treturn len(s.items)\n}", True),
        ("go", "func Add(a, b int) int {\n\treturn a +\n", False),
        ("ruby", "def area\n  3.14 * @r * @r\nend", True),
        ("ruby", "def self.unit\n  new(1)\nend", True),
        ("ruby", "def area\n  3.14 * @r * @r\n", False),
        ("php", "function f($a) {\n    return $a;\n}", True),
        ("php", "public static function m($x): int\n{\n    return $x;\n}", True),  # a method, in a class body
        ("php", "<?php\nfunction f($a) {\n    return $a;\n}", True),
        ("php", "function f($a) {\n    return $a;\n", False),  # the HTML-aware grammar passed this
        ("java", "public int get(int x) {\n    return x;\n}", True),
        ("java", "public int get(int x) {\n    return x\n}", False),
    ],
)
def test_new_languages(language, code, ok):
    assert parses(code, language) is ok


def test_syntax_ceiling_is_the_references_pass_rate():
    references = [
        "push(item) {\n  this.items.push(item);\n}",
        "function f(a) { return a; }",
        "function g( {",
        "get n() { return 1; }",
    ]
    assert syntax_ceiling(references, "javascript") == 75.0
