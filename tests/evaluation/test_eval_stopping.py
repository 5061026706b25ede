"""Where a generated function ends (hybridcl.evaluation.stopping), on hand-written texts."""

import pytest

from hybridcl.evaluation.stopping import function_end


def kept(text, language, final=False):
    end = function_end(text, language, final=final)
    return None if end is None else text[:end]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("def f(a):\n    return a\n\ndef g():\n    pass", "def f(a):\n    return a\n\n"),
        # a decorator and a black-style signature do not end it; the next decorator does
        (
            "@dec\ndef f(\n    a,\n) -> int:\n    return a\n@other\ndef g(): pass",
            "@dec\ndef f(\n    a,\n) -> int:\n    return a\n",
        ),
        ("def f():\n    return 1\nasync def g():", "def f():\n    return 1\n"),
        ("def f():\n    return 1\nif __name__ == '__main__':", "def f():\n    return 1\n"),
        ("def f():\n    return 1\nclass", None),  # "class" may still become "classify = ..."
        ("def f():\n    return 1\nprint(f())", None),  # only definitions end a function
        ("def f():\n    return 1", None),
    ],
)
def test_python_ends_at_the_next_top_level_definition(text, expected):
    assert kept(text, "python") == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "function f(a = {}, {b, c}) {\n  const s = '}';\n  // "
            "}\n  /* } */\n  return {a: a, r: /[}]/g};\n}\nfunction g() {}",
            "function f(a = {}, {b, c}) {\n  const s = '}';\n  // }\n  /* } */\n  return {a: a, r: /[}]/g};\n}",
        ),
        ('function f(a) {\n  return `${a}}` + "}";\n}\n', 'function f(a) {\n  return `${a}}` + "}";\n}'),
        ("function f(a) {\n  return a / 2 / 3;\n}", "function f(a) {\n  return a / 2 / 3;\n}"),
        (
            "const f = ({x}) => {\n  if (x) { return 1; }\n  return 2;\n};",
            "const f = ({x}) => {\n  if (x) { return 1; }\n  return 2;\n}",
        ),
        ("get size() {\n  return this._n;\n}\nset size(v) {}", "get size() {\n  return this._n;\n}"),
        ("function f(a) {\n  return a;", None),
        ("function f(a) {\n  return '}", None),  # inside an unfinished string
    ],
)
def test_javascript_ends_at_the_brace_that_closes_the_function(text, expected):
    assert kept(text, "javascript") == expected


def test_a_closing_code_fence_ends_any_language():
    assert kept("```python\ndef f():\n    return 1\n```\nProse.", "python") == "```python\ndef f():\n    return 1\n```"
    assert (
        kept("Here:\n```js\nconst f = (x) => x;\n```\nMore.", "javascript") == "Here:\n```js\nconst f = (x) => x;\n```"
    )
    assert kept("func F() {}\n```\nProse", "go") == "func F() {}\n"  # a bare fence after unfenced code closes it
    assert kept("func F() {}\n```", "go") is None  # it may still become ```go, an opening fence
    assert kept("func F() {}\n```", "go", final=True) == "func F() {}\n"
    assert (
        kept("```javascript\nfunction f() {\n  return 1;\n}\n```", "javascript")
        == "```javascript\nfunction f() {\n  return 1;\n}"
    )
    assert kept("```python\ndef f():\n    return 1", "python") is None
