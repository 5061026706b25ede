import math
import sys

import pytest

import codexglue_bleu_oracle as oracle
from hybridcl.evaluate import metrics
from hybridcl.evaluate.metrics import bleu_codexglue, bleu_sacre, codebleu, exact_match, score

FIXTURES = [
    (["Returns the sum of a and b."], ["Return the sum of a and b ."]),
    (
        [
            "def add(a, b):\n    return a + b",
            "Parse a JSON file and return a dict",
            "",
            "x",
            "Compute the   mean of values; ignore None.",
            "Open the file at `path` and yield lines (stripped).",
        ],
        [
            "def add(a,b): return a+b",
            "Parses a JSON file into a dictionary.",
            "Does nothing.",
            "x",
            "Compute the mean of the values, ignoring None entries.",
            "Yield stripped lines of the file at path.",
        ],
    ),
    (["a b c"], ["a b c d"]),
    (["&quot;quoted&quot; -- 3-4 1.5, e.g. x.y"], ['"quoted" - 3-4 1.5 , e.g. x.y']),
]


def oracle_bleu(predictions, references, tmp_path):
    """Drive CodeXGLUE's functions exactly as its run.py does: "id\\tpred" rows and a gold file."""
    gold = tmp_path / "gold.txt"
    gold.write_text("".join(f"{i}\t{r}\n" for i, r in enumerate(references)))
    rows = [f"{i}\t{p}" for i, p in enumerate(predictions)]
    gold_map, pred_map = oracle.computeMaps(rows, str(gold))
    return oracle.bleuFromMaps(gold_map, pred_map)[0]


@pytest.mark.parametrize("predictions,references", FIXTURES)
def test_bleu_codexglue_matches_the_original(predictions, references, tmp_path):
    assert bleu_codexglue(predictions, references) == oracle_bleu(predictions, references, tmp_path)


def test_bleu_codexglue_hand_computed():
    # pred 3 tokens, ref 4: all n-grams of the prediction match, so with +1 smoothing for n >= 2
    # log precision is 0; brevity penalty min(0, 1 - (4+1)/(3+1)) = -0.25 -> 100 * exp(-0.25).
    assert bleu_codexglue(["a b c"], ["a b c d"]) == pytest.approx(100 * math.exp(-0.25))
    assert bleu_codexglue(["same words here"], ["Same words here"]) == pytest.approx(100.0)
    # two examples: the corpus score is the mean of sentence scores
    assert bleu_codexglue(["a b c", "q"], ["a b c d", "q"]) == pytest.approx(
        (100 * math.exp(-0.25) + 100.0) / 2
    )


def test_bleu_sacre_hand_computed():
    # all n-gram precisions are 1; BP = exp(1 - 5/4)
    assert bleu_sacre(["a b c d"], ["a b c d e"]) == pytest.approx(100 * math.exp(-0.25))
    assert bleu_sacre(["hello there big world"], ["hello there big world"]) == pytest.approx(100.0)
    # a 3-token corpus has no 4-grams, so corpus BLEU-4 is 0 even for an exact match (unlike bleu_codexglue)
    assert bleu_sacre(["hello there world"], ["hello there world"]) == 0.0
    assert bleu_sacre(["x y"], ["a b"]) == 0.0


def test_exact_match_whitespace_normalised():
    preds = ["def f():\n    return 1", "  a  b ", "A", "x"]
    refs = ["def f():  return 1", "a b", "a", "y"]
    assert exact_match(preds, refs) == 50.0


def test_length_mismatch_and_empty():
    with pytest.raises(ValueError):
        bleu_codexglue(["a"], [])
    with pytest.raises(ValueError):
        exact_match([], [])


def test_codebleu_is_none_when_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "codebleu", None)  # makes `import codebleu` fail
    with pytest.warns(RuntimeWarning, match="codebleu"):
        metrics._codebleu_warned.clear()
        assert codebleu(["x = 1"], ["x = 1"], "python") is None


def test_codebleu_when_installed():
    pytest.importorskip("codebleu")
    assert codebleu(["def f(a, b):\n    return a + b\n"] * 2, ["def f(a, b):\n    return a + b\n"] * 2,
                    "python") == pytest.approx(100.0)
    s = codebleu(["function f(a, b) { return a + b; }"], ["function f(a, b) { return a - b; }"], "js")
    assert 0.0 < s < 100.0


def test_score_keys_by_direction():
    preds = ["def f(x):\n    return x + 1\n", "def g(:\n", "print 'hi'"]
    refs = ["def f(x):\n    return x + 1\n", "def g():\n    pass\n", "print('hi')"]
    t2c = score(preds, refs, language="python", direction="text-to-code")
    assert set(t2c) == {"bleu_codexglue", "bleu_sacre", "exact_match", "codebleu", "syntax_pass",
                        "syntax_pass_ast", "syntax_agreement"}
    assert t2c["exact_match"] == pytest.approx(100 / 3)
    assert t2c["syntax_pass"] == pytest.approx(200 / 3)  # tree-sitter accepts Python 2 print
    assert t2c["syntax_pass_ast"] == pytest.approx(100 / 3)
    assert t2c["syntax_agreement"] == pytest.approx(200 / 3)
    c2t = score(["adds one", "x"], ["add one", "y"], language="javascript", direction="code-to-text")
    assert set(c2t) == {"bleu_codexglue", "bleu_sacre", "exact_match", "codebleu"}
    assert c2t["codebleu"] is None
    js = score(["function f() { return 1; }"], ["function f() { return 1; }"], language="javascript",
               direction="text-to-code")
    assert js["syntax_pass"] == 100.0 and "syntax_pass_ast" not in js
    with pytest.raises(ValueError):
        score(["a"], ["a"], language="python", direction="code-to-code")
