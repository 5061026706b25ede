"""Turning a model's raw output into the code or text that is scored."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The code inside the first Markdown fence (```lang ... ```), else ``text`` unchanged.

    Instruction-tuned base models often answer in a fenced block; scoring the fence itself would
    count every such answer as a syntax error.
    """
    match = _FENCE.search(text)
    return match.group(1).rstrip("\n") if match else text
