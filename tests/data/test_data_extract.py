import pytest
from _data_trees import js_tree, languages_tree, many_files_tree, python_tree

from hybridcl.data.extract import (
    Filters,
    TreeSource,
    deduplicate,
    extract,
    jsdoc_description,
    line_comment_description,
    render_inline_tags,
    split_of,
)
from hybridcl.data.records import Record
from hybridcl.errors import DataError


def test_python_tree_counts_at_every_filter(tmp_path):
    root = python_tree(tmp_path / "src")
    result = extract(TreeSource(str(root), "me/proj"), "python", Filters(valid_fraction=0.0), progress=False)
    r = result.report
    assert r.files_found == 6
    assert r.files_skipped == {"test path": 1, "minified": 0, "not UTF-8": 1, "syntax error": 1}
    assert r.files_parsed == 3
    assert r.functions_found == 13
    assert r.filtered == {
        "no_docstring": 1,
        "nested": 1,
        "test": 1,
        "special": 1,
        "docstring_short": 1,
        "docstring_long": 0,
        "code_short": 1,
        "code_long": 1,
        "body_only_docstring": 1,
    }
    assert (r.exact_duplicates, r.near_duplicates, r.kept) == (1, 1, 3)
    train = result.splits["train"]
    assert [x.func_name for x in train] == ["add", "Box.get", "Box.outer"]
    assert {x.path for x in train} <= {"pkg/copy.py", "pkg/util.py"}
    get = next(x for x in train if x.func_name == "Box.get")
    assert get.docstring == "Return the value held in the box.\n\nThe value is not copied."
    assert get.code.startswith('def get(self):\n    """Return')  # dedented method
    assert get.repo == "me/proj" and get.language == "python"
    assert r.rows()[-1] == ("near duplicate", 1, 3)
    assert "exact duplicate" in r.table()


def test_first_of_duplicates_in_path_order_is_kept(tmp_path):
    root = python_tree(tmp_path / "src")
    result = extract(TreeSource(str(root), "me/proj"), "python", Filters(valid_fraction=0.0), progress=False)
    add = next(x for x in result.splits["train"] if x.func_name == "add")
    assert add.path == "pkg/copy.py"  # copy.py comes before util.py; util.py's add is the exact duplicate


def test_javascript_jsdoc_functions(tmp_path):
    root = js_tree(tmp_path / "js")
    result = extract(
        TreeSource(str(root), "npm:x@1", url_template="https://u/{path}#L{start}-L{end}"),
        "javascript",
        Filters(valid_fraction=0.0),
        progress=False,
    )
    r = result.report
    assert r.files_found == 2 and r.files_skipped["minified"] == 1
    assert r.functions_found == 10
    assert r.filtered["no_docstring"] == 2 and r.filtered["special"] == 1  # noDoc (blank line), inc (trailing comment)
    got = {x.func_name: x for x in result.splits["train"]}
    assert list(got) == ["add", "neg", "square", "mul", "div", "Stack.push", "subtract"]
    assert (
        got["add"].docstring == "Adds two numbers together and returns the result.\n\nMore text, see mul and the push."
    )
    assert (
        got["neg"].docstring == "Negates the number given as input,\nreturning a new number."
    )  # a // block, up to @param
    assert got["square"].docstring == "Squares the number given as input."  # the eslint directive is left out
    assert got["mul"].docstring == "Multiplies the two values given as input."
    assert got["div"].docstring == "Divides the first value by the second one."
    assert got["Stack.push"].docstring == "Pushes an item onto the top of the stack."
    assert got["subtract"].docstring == "Subtract the second number from the first number."
    assert got["mul"].code == "const mul = (a, b) => {\n  const p = a * b;\n  return p;\n};"
    assert got["div"].code.startswith("const div = function (a, b) {")
    assert got["Stack.push"].code == "push(item) {\n  this.items.push(item);\n  this.size += 1;\n}"
    assert got["add"].url == "https://u/lib.js#L8-L11"


def test_jsdoc_description_stops_at_tags():
    assert jsdoc_description("/**\n * Hello there world.\n * @param {x} y\n * More.\n */") == "Hello there world."
    assert jsdoc_description("/** @private */") == ""
    assert jsdoc_description("/**\n * @summary Short one.\n * @description Long one here.\n */") == "Long one here."


def test_split_by_file_is_disjoint_and_deterministic(tmp_path):
    root = many_files_tree(tmp_path / "many", 40)
    a = extract(TreeSource(str(root), "r"), "python", Filters(valid_fraction=0.3, test_fraction=0.2), progress=False)
    b = extract(TreeSource(str(root), "r"), "python", Filters(valid_fraction=0.3, test_fraction=0.2), progress=False)
    files = {s: {x.path for x in recs} for s, recs in a.splits.items()}
    assert (
        not (files["train"] & files["valid"])
        and not (files["train"] & files["test"])
        and not (files["valid"] & files["test"])
    )
    assert sum(len(v) for v in a.splits.values()) == 120 == a.report.kept
    assert all(len(v) > 0 for v in files.values())
    assert a.splits == b.splits
    for split, recs in a.splits.items():
        assert all(split_of("r", x.path, 0.3, 0.2) == split for x in recs)
        assert a.report.files_per_split[split] == len(files[split])


def test_cap_subsamples_deterministically(tmp_path):
    root = many_files_tree(tmp_path / "many", 40)
    a = extract(TreeSource(str(root), "r"), "python", Filters(), max_per_split={"train": 10}, progress=False)
    b = extract(TreeSource(str(root), "r"), "python", Filters(), max_per_split={"train": 10}, progress=False)
    assert len(a.splits["train"]) == 10 and a.splits["train"] == b.splits["train"]
    assert a.report.subsampled == {"train": 10} and a.report.splits["train"] > 10


def test_near_duplicates_removed_by_jaccard():
    base = (
        "def f(alpha, beta, gamma, delta, epsilon):\n"
        "    return alpha + beta + gamma + delta + epsilon + zeta + eta + theta"
    )
    records = [
        Record("r", "a.py", "f", "python", base, "d"),
        Record("r", "b.py", "f", "python", base.replace("theta", "iota"), "d"),  # 10 of 12 shared: 0.83
        Record("r", "c.py", "g", "python", "def g(x):\n    return x", "d"),
    ]
    assert [r.path for r in deduplicate(records, 0.8)] == ["a.py", "c.py"]
    assert [r.path for r in deduplicate(records, 0.9)] == ["a.py", "b.py", "c.py"]


def test_extract_errors(tmp_path):
    with pytest.raises(DataError, match="unsupported language 'rust'"):
        extract(TreeSource(str(tmp_path), "r"), "rust", progress=False)
    with pytest.raises(DataError, match="not a folder"):
        extract(TreeSource(str(tmp_path / "nope"), "r"), "python", progress=False)
    (tmp_path / "a.py").write_text("def f():\n    return 1\n")
    with pytest.raises(
        DataError, match=f"{tmp_path}: no python functions left after filtering \\(1 found in 1 files\\)"
    ):
        extract(TreeSource(str(tmp_path), "r"), "python", progress=False)


def _extract(root, language, **kw):
    return extract(TreeSource(str(root), "me/x", **kw), language, Filters(valid_fraction=0.0), progress=False)


def test_go_functions_and_methods(tmp_path):
    result = _extract(languages_tree(tmp_path / "t"), "go")
    r = result.report
    assert (r.files_found, r.files_skipped["test path"], r.functions_found) == (2, 1, 5)  # mathx_test.go skipped
    assert {k: v for k, v in r.filtered.items() if v} == {
        "no_docstring": 1,
        "special": 1,
        "docstring_short": 1,
    }  # init is special
    got = {x.func_name: x for x in result.splits["train"]}
    assert list(got) == ["Add", "Stack.Len"]  # a method is named by its receiver's type, without * and [T]
    assert (
        got["Add"].docstring
        == "Add returns the sum of a and b.\nIt never overflows in this example.\n\nDeprecated: use a + b."
    )
    assert got["Stack.Len"].docstring == "Len reports the number of items on the stack."  # //go:noinline left out
    assert got["Add"].code == "func Add(a, b int) int {\n\ts := a + b\n\treturn s\n}"


def test_ruby_methods(tmp_path):
    result = _extract(languages_tree(tmp_path / "t"), "ruby")
    r = result.report
    assert (r.files_found, r.files_skipped["test path"], r.functions_found) == (2, 1, 5)  # spec/ skipped
    # initialize is special (its comment is found although it starts the class body); :nodoc: hides two
    assert {k: v for k, v in r.filtered.items() if v} == {"no_docstring": 2, "special": 1}
    got = {x.func_name: x for x in result.splits["train"]}
    assert list(got) == ["Shapes.Circle.area", "Shapes.Circle.unit"]
    assert got["Shapes.Circle.area"].docstring == "Returns the area of the circle as a float."  # up to the YARD @return
    assert got["Shapes.Circle.unit"].code == "def self.unit\n  c = new(1)\n  c\nend"


def test_php_functions_and_methods(tmp_path):
    result = _extract(languages_tree(tmp_path / "t"), "php")
    r = result.report
    assert (r.files_found, r.files_skipped["test path"], r.functions_found) == (2, 1, 4)  # WalletTest.php skipped
    assert {k: v for k, v in r.filtered.items() if v} == {
        "no_docstring": 1,
        "special": 1,
    }  # {@inheritdoc} only; __construct
    got = {x.func_name: x for x in result.splits["train"]}
    assert list(got) == ["format_money", "Wallet.deposit"]
    assert got["format_money"].docstring == "Formats the given amount of money as text, see Money."
    assert got["Wallet.deposit"].code.startswith("public function deposit(int $cents): void\n{\n    $this->cents")


def test_java_methods(tmp_path):
    result = _extract(languages_tree(tmp_path / "t"), "java")
    r = result.report
    assert (r.files_found, r.files_skipped["test path"], r.functions_found) == (2, 1, 3)  # CounterTest.java skipped
    assert {k: v for k, v in r.filtered.items() if v} == {"special": 2}  # the constructor and toString
    assert [(x.func_name, x.docstring) for x in result.splits["train"]] == [
        ("Counter.add", "Increments the counter by the given step, see get().")
    ]


def test_inline_tags_render_as_text():
    assert (
        render_inline_tags("See {@link Foo}, {@link Foo|the foo}, {@linkcode Bar baz} and {@code a + b}.{@inheritDoc}")
        == "See Foo, the foo, baz and a + b."
    )
    assert (
        line_comment_description(["// Adds {@link x}.", "// eslint-disable-line", "// More.", "// @param a"])
        == "Adds x.\nMore."
    )
    assert line_comment_description(["# :nodoc:", "# Hidden method here."]) == ""


def test_exclude_matches_paths_and_reports_unmatched(tmp_path):
    root = languages_tree(tmp_path / "t")
    (root / "src" / "vendor").mkdir()
    (root / "src" / "vendor" / "Other.php").write_text(
        (root / "src" / "Wallet.php").read_text().replace("Wallet", "Other")
    )
    everything = _extract(root, "php")
    assert everything.report.files_found == 3 and everything.report.unmatched_excludes == []
    result = _extract(root, "php", exclude=("src/vendor", "src/nothing*"))
    assert result.report.files_found == 2  # src/vendor is not walked (a path, not only a top-level name)
    assert result.report.unmatched_excludes == [f"{root}: src/nothing*"]
    assert f"warning: {root}: src/nothing* matched no path" in result.report.table()
    only = _extract(root, "php", include=("src/vendor",))
    assert [x.path for x in only.splits["train"]] == ["src/vendor/Other.php", "src/vendor/Other.php"]
    assert _extract(root, "php", exclude=("src/*.php",)).report.files_found == 1
