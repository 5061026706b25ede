"""Text metrics for generated code and docstrings. All scores are on a 0-100 scale.

CodeXGLUE scores its two directions with two different BLEUs; both are here, named by direction
(whichever direction a run trains, both are computed, so runs stay comparable):

- ``bleu_codexglue_code_to_text``: CodeXGLUE's **code-to-text** BLEU: smoothed *sentence* BLEU-4
  averaged over examples, texts lower-cased and split into words and punctuation (the number
  code-to-text papers report). Ported from microsoft/CodeXGLUE
  ``Code-Text/code-to-text/code/bleu.py`` (MIT licence, Copyright (c) Microsoft Corporation), itself
  adapted from the Moses ``bleu.py`` by hieuhoang1972. Port: same normalisation, tokenisation,
  n-gram counting, smoothing (+1 for n >= 2), brevity penalty and averaging; only the file I/O of
  ``computeMaps`` is replaced by lists. Unlike CodeXGLUE's ``run.py`` the result is not rounded.
- ``bleu_codexglue_text_to_code``: CodeXGLUE's **text-to-code** BLEU
  (``Text-Code/text-to-code/evaluator/bleu.py``, ``_bleu``): one *corpus* BLEU-4 over all examples,
  tokens split on whitespace, case kept, every n-gram precision (unigrams too) add-one smoothed.
- ``bleu_sacre``: sacrebleu's corpus BLEU with its defaults (13a tokenisation, case kept, ``exp``
  smoothing, which only matters where an n-gram order has no match).
- ``exact_match``: whitespace-normalised exact match (runs of whitespace collapse to one space,
  leading/trailing whitespace ignored; case-sensitive).
- ``codebleu``: the ``codebleu`` package (PyPI) when importable, else None; run with the string-hash
  seed fixed (``PYTHONHASHSEED=0``), since its data-flow match depends on it.
- ``bleu_reference`` (with ``reference_metrics``): the seed's BLEU: nltk's ``sentence_bleu`` with
  ``SmoothingFunction().method1`` and uniform 4-gram weights on the model tokenizer's tokens (BPE
  pieces), case kept, averaged over examples, reported 0-100 (the seed printed 0-1). A blank
  prediction scores 0, as in the seed. ``syntax_pass_reference`` is the seed's pass check
  (:func:`hybridcl.evaluation.syntax.passes_seed`).

The seed's write-up called its BLEU "BLEU"; it is ``bleu_reference``, not CodeXGLUE's code-to-text BLEU.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import warnings
import xml.sax.saxutils
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

# ---- CodeXGLUE smoothed BLEU (port of Code-Text/code-to-text/code/bleu.py) -------------------------
# Module-level settings of the original: nonorm = 0, preserve_case = False, eff_ref_len = "shortest".

_NORMALIZE1 = [
    (re.compile(p), r)
    for p, r in [
        ("<skipped>", ""),  # strip "skipped" tags
        (r"-\n", ""),  # strip end-of-line hyphenation and join lines
        (r"\n", " "),  # join lines
    ]
]
_NORMALIZE2 = [
    (re.compile(p), r)
    for p, r in [
        (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 "),  # tokenize punctuation. apostrophe is missing
        (r"([^0-9])([\.,])", r"\1 \2 "),  # tokenize period and comma unless preceded by a digit
        (r"([\.,])([^0-9])", r" \1 \2"),  # tokenize period and comma unless followed by a digit
        (r"([0-9])(-)", r"\1 \2 "),  # tokenize dash when preceded by a digit
    ]
]


def _normalize(s) -> list[str]:
    """NIST mteval-v11a normalisation and tokenisation (the original's ``normalize``)."""
    if type(s) is not str:
        s = " ".join(s)
    for pattern, replace in _NORMALIZE1:
        s = re.sub(pattern, replace, s)
    s = xml.sax.saxutils.unescape(s, {"&quot;": '"'})
    s = f" {s} "
    s = s.lower()
    for pattern, replace in _NORMALIZE2:
        s = re.sub(pattern, replace, s)
    return s.split()


def _count_ngrams(words: list[str], n: int = 4) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            ngram = tuple(words[i : i + k])
            counts[ngram] = counts.get(ngram, 0) + 1
    return counts


def _cook_refs(refs: list[str], n: int = 4):
    refs_tok = [_normalize(ref) for ref in refs]
    maxcounts: dict[tuple, int] = {}
    for ref in refs_tok:
        for ngram, count in _count_ngrams(ref, n).items():
            maxcounts[ngram] = max(maxcounts.get(ngram, 0), count)
    return [len(ref) for ref in refs_tok], maxcounts


def _cook_test(test: str, item, n: int = 4) -> dict:
    reflens, refmaxcounts = item
    test_tok = _normalize(test)
    result = {"testlen": len(test_tok), "reflen": min(reflens)}  # eff_ref_len == "shortest"
    result["guess"] = [max(len(test_tok) - k + 1, 0) for k in range(1, n + 1)]
    result["correct"] = [0] * n
    for ngram, count in _count_ngrams(test_tok, n).items():
        result["correct"][len(ngram) - 1] += min(refmaxcounts.get(ngram, 0), count)
    return result


def _score_cooked(allcomps: list[dict], n: int = 4, smooth: int = 1) -> list[float]:
    totalcomps: dict[str, Any] = {"testlen": 0, "reflen": 0, "guess": [0] * n, "correct": [0] * n}
    for comps in allcomps:
        for key in ("testlen", "reflen"):
            totalcomps[key] += comps[key]
        for key in ("guess", "correct"):
            for k in range(n):
                totalcomps[key][k] += comps[key][k]
    logbleu = 0.0
    all_bleus: list[float] = []
    tiny = sys.float_info.min  # the original adds it to avoid log(0)
    for k in range(n):
        correct = totalcomps["correct"][k]
        guess = totalcomps["guess"][k]
        addsmooth = 1 if smooth == 1 and k > 0 else 0
        logbleu += math.log(correct + addsmooth + tiny) - math.log(guess + addsmooth + tiny)
        if guess == 0:
            all_bleus.append(-10000000)
        else:
            all_bleus.append(math.log(correct + tiny) - math.log(guess))
    logbleu /= float(n)
    all_bleus.insert(0, logbleu)
    brev_penalty = min(0, 1 - float(totalcomps["reflen"] + 1) / (totalcomps["testlen"] + 1))
    for i in range(len(all_bleus)):
        if i == 0:
            all_bleus[i] += brev_penalty
        all_bleus[i] = math.exp(all_bleus[i])
    return all_bleus


def _sentence_bleu(refs: list[str], candidate: str) -> list[float]:
    """The original's ``bleu(refs, candidate)``: [BLEU, p1..p4] as fractions."""
    return _score_cooked([_cook_test(candidate, _cook_refs(refs))], smooth=1)


def _split_puncts(line: str) -> str:
    return " ".join(re.findall(r"[\w]+|[^\s\w]", line))


def bleu_codexglue_code_to_text(predictions: Sequence[str], references: Sequence[str]) -> float:
    """CodeXGLUE's code-to-text BLEU-4, 0-100: mean over examples of the smoothed sentence BLEU.

    Each text is stripped, lower-cased and split into words and punctuation (``splitPuncts``)
    before scoring, as ``computeMaps`` does; one reference per prediction.
    """
    check_pair(predictions, references)
    total = [0.0] * 5
    for pred, ref in zip(predictions, references, strict=True):
        # computeMaps: predictionMap[id] = [splitPuncts(pred.strip().lower())], same for gold
        bl = _sentence_bleu([_split_puncts(ref.strip().lower())], _split_puncts(pred.strip().lower()))
        total = [total[i] + bl[i] for i in range(len(bl))]
    return total[0] * 100.0 / len(predictions)  # bleuFromMaps(...)[0]


# ---- CodeXGLUE text-to-code BLEU --------------------------------------------------------------------
# Hand-written because no library computes it: the evaluator smooths every order's precision as
# (matches + 1) / (candidates + 1), unigrams included, where sacrebleu's add-k and nltk's method2
# leave the unigram precision unsmoothed, which gives a different number.


def _ngram_counts(tokens: list[str], max_order: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def bleu_codexglue_text_to_code(predictions: Sequence[str], references: Sequence[str], max_order: int = 4) -> float:
    """CodeXGLUE's text-to-code BLEU-4, 0-100: one corpus-level BLEU over all examples.

    As CodeXGLUE's ``Text-Code/text-to-code/evaluator/bleu.py`` ``_bleu`` computes it: each text is
    split on whitespace (newlines included: the evaluator reads one example per line, so
    multi-line code counts the same tokens), case is kept; n-gram matches (clipped by the
    reference's counts) and candidate n-grams are summed over the corpus for n = 1..4; each
    precision is (matches + 1) / (candidates + 1); BLEU = brevity penalty * geometric mean, the
    brevity penalty exp(1 - reference tokens / predicted tokens) when the predictions are not
    longer. Not rounded (the evaluator rounds to 2 decimals). The evaluator divides by zero when
    the predictions or the references have no token at all; here no predicted token gives 0 and no
    reference token a brevity penalty of 1.
    """
    check_pair(predictions, references)
    matches = [0] * max_order
    candidates = [0] * max_order
    pred_len = ref_len = 0
    for pred, ref in zip(predictions, references, strict=True):
        pred_tokens, ref_tokens = pred.split(), ref.split()
        pred_len += len(pred_tokens)
        ref_len += len(ref_tokens)
        overlap = _ngram_counts(pred_tokens, max_order) & _ngram_counts(ref_tokens, max_order)
        for ngram, count in overlap.items():
            matches[len(ngram) - 1] += count
        for n in range(1, max_order + 1):
            candidates[n - 1] += max(len(pred_tokens) - n + 1, 0)
    return codexglue_text_to_code_bleu_from_counts(matches, candidates, pred_len, ref_len)


def codexglue_text_to_code_bleu_from_counts(
    matches: Sequence[int], candidates: Sequence[int], pred_len: int, ref_len: int
) -> float:
    """:func:`bleu_codexglue_text_to_code` (0-100) from corpus counts: clipped n-gram matches and
    predicted n-grams per order, predicted and reference tokens."""
    if pred_len == 0:
        return 0.0
    log_precision = sum(math.log((m + 1) / (c + 1)) for m, c in zip(matches, candidates, strict=True)) / len(matches)
    brevity = 1.0 if pred_len > ref_len else math.exp(1 - ref_len / pred_len)
    return 100.0 * brevity * math.exp(log_precision)


# ---- other metrics --------------------------------------------------------------------------------


def check_pair(predictions: Sequence[str], references: Sequence[str]) -> None:
    """ValueError unless there are as many predictions as references, and at least one."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def bleu_sacre(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU, 0-100 (default 13a tokeniser, one reference per prediction)."""
    import sacrebleu

    check_pair(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def _ws(text: str) -> str:
    return " ".join(text.split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Percent of predictions equal to their reference after whitespace normalisation (0-100)."""
    check_pair(predictions, references)
    hits = sum(_ws(p) == _ws(r) for p, r in zip(predictions, references, strict=True))
    return 100.0 * hits / len(predictions)


_CODEBLEU_LANG = {"js": "javascript", "py": "python", "csharp": "c_sharp", "c#": "c_sharp", "c++": "cpp"}
_codebleu_warned: set[str] = set()


def codebleu(predictions: Sequence[str], references: Sequence[str], language: str) -> float | None:
    """CodeBLEU (Ren et al. 2020), 0-100, via the ``codebleu`` package (0.25 each of n-gram,
    weighted n-gram, syntax and data-flow match); None when it cannot be computed.

    Optional: ``codebleu`` 0.7.0 (the newest on PyPI) pins ``tree-sitter<0.23`` while hybridcl uses
    tree-sitter 0.26, so it is not a dependency: pip would downgrade tree-sitter. Installed with
    ``pip install --no-deps codebleu`` it works with tree-sitter 0.26 and the grammars hybridcl
    already installs. Returns None (with one warning per reason) when the package is missing, the
    language is unsupported by it, or its grammar (``tree_sitter_<lang>``) is not installed.
    """
    check_pair(predictions, references)
    lang = _CODEBLEU_LANG.get(language.lower(), language.lower())
    try:
        from codebleu.utils import AVAILABLE_LANGS, get_tree_sitter_language
    except ImportError:
        _warn_once("codebleu is not installed (pip install --no-deps codebleu); CodeBLEU is None")
        return None
    if lang not in AVAILABLE_LANGS:
        _warn_once(f"codebleu does not support language {language!r}; CodeBLEU is None")
        return None
    try:
        get_tree_sitter_language(lang)
    except ImportError:
        _warn_once(f"no tree-sitter grammar for {lang!r} (pip install tree-sitter-{lang}); CodeBLEU is None")
        return None
    return 100.0 * _calc_codebleu_fixed_hash([[r] for r in references], list(predictions), lang)


# The codebleu package's data-flow match orders variable names by iterating Python sets of strings,
# whose order follows the process's string-hash seed (random per process unless PYTHONHASHSEED is
# set): the same texts scored 49.39, 49.48 and 49.18 under PYTHONHASHSEED=0, 1 and 2 (one study cell,
# 100 JavaScript completions). Its own code runs here, unchanged, in a child with the hash seed fixed.
_CODEBLEU_CHILD = (
    "import json, sys\n"
    "from codebleu import calc_codebleu\n"
    "args = json.load(sys.stdin)\n"
    "print(calc_codebleu(args['references'], args['predictions'], lang=args['lang'])['codebleu'])\n"
)


def _calc_codebleu_fixed_hash(references: list[list[str]], predictions: list[str], lang: str) -> float:
    """``calc_codebleu(...)["codebleu"]`` (0-1) as computed under ``PYTHONHASHSEED=0``."""
    if not sys.flags.hash_randomization:  # this process already has hash seed 0
        from codebleu import calc_codebleu

        return float(calc_codebleu(references, predictions, lang=lang)["codebleu"])
    child = subprocess.run(
        [sys.executable, "-c", _CODEBLEU_CHILD],
        input=json.dumps({"references": references, "predictions": predictions, "lang": lang}),
        stdout=subprocess.PIPE,  # its warnings (stderr) reach the user as they would in-process
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=False,
    )
    if child.returncode:
        raise RuntimeError(f"CodeBLEU failed in its child process (exit {child.returncode}); its error is above")
    return float(child.stdout.split()[-1])


def _warn_once(message: str) -> None:
    if message not in _codebleu_warned:
        _codebleu_warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def bleu_reference_scores(
    predictions: Sequence[str], references: Sequence[str], tokenize: Callable[[str], list[str]]
) -> list[float]:
    """Each example's seed BLEU (0-100): nltk ``sentence_bleu([tokenize(ref)], tokenize(pred))`` with
    method1 smoothing and weights (0.25,) * 4; 0 for a blank prediction or an empty token list.

    ``tokenize`` is the model tokenizer's ``tokenize`` (the seed's ``self.tokenizer.tokenize``).
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    check_pair(predictions, references)
    smoothing = SmoothingFunction().method1
    out = []
    for pred, ref in zip(predictions, references, strict=True):
        if not pred or not pred.strip():
            out.append(0.0)
            continue
        ref_tokens, pred_tokens = tokenize(ref), tokenize(pred)
        if not ref_tokens or not pred_tokens:
            out.append(0.0)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns on orders with no match; method1 handles them
            out.append(
                100.0
                * sentence_bleu(
                    [ref_tokens], pred_tokens, weights=(0.25, 0.25, 0.25, 0.25), smoothing_function=smoothing
                )
            )
    return out


def bleu_reference(
    predictions: Sequence[str], references: Sequence[str], tokenize: Callable[[str], list[str]]
) -> float:
    """The seed's BLEU, 0-100: the mean of :func:`bleu_reference_scores` over examples."""
    scores = bleu_reference_scores(predictions, references, tokenize)
    return sum(scores) / len(scores)
