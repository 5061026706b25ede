"""Names several modules share: languages, directions, model kinds, the headline metric.

This module imports nothing from hybridcl, so any module can import it without a cycle.
"""

from __future__ import annotations

from typing import Literal

# CodeSearchNet's six languages, in its order; a task is one of them.
LANGUAGES = ("python", "javascript", "java", "go", "php", "ruby")
LANGUAGE_NAMES = {
    "python": "Python",
    "javascript": "JavaScript",
    "java": "Java",
    "go": "Go",
    "php": "PHP",
    "ruby": "Ruby",
}

# text-to-code: docstring -> function; code-to-text: function -> docstring; completion: the start
# of a function -> the function (the seed's task)
DIRECTIONS = ("text-to-code", "code-to-text", "completion")
# Directions whose outputs are code (syntax-checked, stopped at the function's end, CodeBLEU).
CODE_DIRECTIONS = frozenset({"text-to-code", "completion"})

Kind = Literal["seq2seq", "causal"]
KINDS: tuple[str, ...] = ("seq2seq", "causal")

# Cell values that describe the evaluation rather than what a task retained: no CL metric of them.
NOT_CL_METRICS = frozenset({"cut_share"})

# The metric the summary, the per-task table and the comparison lead with (0-100, higher is better).
HEADLINE_METRIC = "bleu_codexglue_code_to_text"

# Label value of a token that is not a target (PyTorch's cross-entropy default).
IGNORE_INDEX = -100
