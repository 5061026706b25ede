"""Where a generated function ends, so that generation can stop there instead of at the token limit.

A model asked for one function often goes on after it (a second function, a closing Markdown
fence and prose, a test). Generating that costs time, and with a token limit smaller than the
function it cuts the function itself: BLEU then measures the brevity penalty and the syntax check
the cut. :func:`function_end` finds the end of the first function in a generated text:

- a closing Markdown code fence (the fence an instruction-tuned model opened, or a bare fence
  line after code that had none);
- Python: the next top-level definition (``def``, ``async def``, ``class``, a decorator or
  ``if __name__``) after the function's body has started (an indented line), so a decorator or
  a signature spread over several lines does not end it;
- JavaScript: the brace that closes the function's body (the first ``{`` outside parentheses,
  so default parameters and destructuring do not count), outside strings, template literals,
  comments and regular-expression literals.

:class:`FunctionEndCriteria` applies it during generation as a transformers ``StoppingCriteria``
(one flag per sequence). The end-of-sequence token ends a generation as before.

Why hand-written scanners: tree-sitter tells whether a complete text parses, not where the first
function ends in an unfinished one, and re-parsing every sequence at every step costs far more
than this one pass over the text. The JavaScript scanner does not parse: a regular expression is
recognised by the token before its ``/`` (as JavaScript's grammar does), and a ``}`` inside a
template literal's ``${...}`` is not counted.
"""

from __future__ import annotations

import re

import torch
from transformers import StoppingCriteria

_PY_TOP = re.compile(r"(?:async[ \t]+def[ \t]|def[ \t]|class[ \t]|@|if[ \t]+__name__)")
_FENCE = "```"
# after one of these (or at the start) a "/" starts a regular expression, otherwise it divides
_REGEX_BEFORE = set("(,=:[!&|?{};+-*%<>~^")


def function_end(text: str, language: str | None, *, final: bool = False) -> int | None:
    """The index in ``text`` where its first function ends (``text[:index]`` is the function,
    fence included), or None if it has not ended (yet).

    ``language``: ``"python"``, ``"javascript"``, or another/None for the fence rule alone.
    ``final``: the text is complete (no more tokens come), so a last fence line without a newline
    counts as a whole line.
    """
    ends = [_fence_end(text, final)]
    if language == "python":
        ends.append(_python_end(text))
    elif language == "javascript":
        ends.append(_javascript_end(text))
    found = [e for e in ends if e is not None]
    return min(found) if found else None


def _lines(text: str):
    pos = 0
    for line in text.splitlines(keepends=True):
        yield pos, line
        pos += len(line)


def _fence_end(text: str, final: bool) -> int | None:
    opened, seen_code = False, False
    for pos, line in _lines(text):
        stripped = line.strip()
        if stripped.startswith(_FENCE):
            if opened:
                return pos + line.index(_FENCE) + len(_FENCE)
            complete = line.endswith("\n") or final
            if seen_code and stripped == _FENCE and complete:  # a bare fence after unfenced code closes it
                return pos
            if not seen_code or stripped != _FENCE:  # ```lang, or a fence before any code: it opens
                opened = True
        elif stripped:
            seen_code = True
    return None


def _python_end(text: str) -> int | None:
    body = False
    for pos, line in _lines(text):
        if body and _PY_TOP.match(line):
            return pos
        if line[:1] in (" ", "\t") and line.strip():
            body = True
    return None


def _javascript_end(text: str) -> int | None:
    i, n = 0, len(text)
    paren = depth = 0
    opened = False
    last = ""  # the last significant character, to tell a regular expression from a division
    while i < n:
        skipped = _skip_inert(text, i, last)
        if skipped is not None:
            i, last = skipped
            if i < 0:
                return None
            continue
        c = text[i]
        if c in "([":
            paren += 1
        elif c in ")]":
            paren = max(0, paren - 1)
        elif c == "{" and (opened or paren == 0):
            opened = True
            depth += 1
        elif c == "}" and opened:
            depth -= 1
            if depth == 0:
                return i + 1
        if not c.isspace():
            last = c
        i += 1
    return None


def _skip_inert(text: str, i: int, last: str) -> tuple[int, str] | None:
    """Skip a Markdown fence line, string, comment or regular expression starting at ``i``.

    Returns the index after it (-1 when it is not closed yet) and the new last significant character,
    or None when code starts at ``i``.
    """
    c = text[i]
    if text.startswith(_FENCE, i) and (i == 0 or text[i - 1] == "\n"):  # a Markdown fence line, not code
        return text.find("\n", i), last
    if c in "\"'`":
        return _skip_string(text, i, c), c
    if text.startswith("//", i):
        return text.find("\n", i), last
    if text.startswith("/*", i):
        close = text.find("*/", i + 2)
        return (close + 2 if close >= 0 else -1), last
    if c == "/" and (last == "" or last in _REGEX_BEFORE):
        return _skip_regex(text, i), "/"
    return None


def _skip_string(text: str, i: int, quote: str) -> int:
    """Index after the string literal starting at ``i``, or -1 if it is not closed yet."""
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == quote:
            return j + 1
        if ch == "\n" and quote != "`":  # an unterminated one-line string: stop treating it as one
            return j
        j += 1
    return -1


def _skip_regex(text: str, i: int) -> int:
    """Index after the regular-expression literal starting at ``i`` (flags included), or -1."""
    j, in_class = i + 1, False
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == "\n":  # not a regular expression after all: treat the "/" as a division
            return i + 1
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        elif ch == "/" and not in_class:
            j += 1
            while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                j += 1
            return j
        j += 1
    return -1


_TAIL = 16  # characters: longer than any token, so the token that ends a function is in the tail


def may_have_ended(text: str, language: str | None) -> bool:
    """A cheap test that is True whenever the text's last token may have ended the function.

    The full scan (:func:`function_end`) is linear in the text; running it only when the tail
    holds a closing fence's backquote, a JavaScript ``}``, or (Python) the start of a top-level
    line keeps generation's cost per step from growing with the text. A missed chance is
    harmless: the next trigger, or :func:`hybridcl.evaluation.generate.generate`'s final cut, finds
    the same end.
    """
    tail = text[-_TAIL:]
    if "`" in tail or (language == "javascript" and "}" in tail):
        return True
    if language == "python":
        line = text[text.rfind("\n") + 1 :]
        return bool(line) and not line[0].isspace() and len(line) <= _TAIL
    return False


def functions_ended(tokenizer, rows: list[list[int]], language: str | None) -> list[bool]:
    """For each row of generated token ids, whether its text's function has ended (decoded without
    special tokens). The one test both :class:`FunctionEndCriteria` and
    :func:`hybridcl.evaluation.greedy.greedy_generate` stop a row on, so the two stop at the same token."""
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True) if rows else []
    return [may_have_ended(text, language) and function_end(text, language) is not None for text in texts]


class FunctionEndCriteria(StoppingCriteria):
    """Stops each sequence once :func:`function_end` finds the end of its function.

    ``start``: the position in ``input_ids`` where the generated tokens begin (the prompt's width
    for causal models, 1 for the decoder start token of seq2seq models).
    """

    def __init__(self, tokenizer, language: str | None, start: int, eos_token_id: int | None):
        self.tokenizer, self.language, self.start, self.eos = tokenizer, language, start, eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        rows = input_ids[:, self.start :].tolist()
        done = [self.eos is not None and self.eos in row for row in rows]  # finished already; generate handles it
        open_rows = [k for k, d in enumerate(done) if not d]
        for k, flag in zip(
            open_rows, functions_ended(self.tokenizer, [rows[k] for k in open_rows], self.language), strict=True
        ):
            done[k] = flag
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]
