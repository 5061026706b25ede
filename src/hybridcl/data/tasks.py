"""Examples for one task: records turned into (source, target) pairs for a direction.

``text-to-code``: source = the docstring's summary (first paragraph), target = the function
without its docstring. ``code-to-text``: source = the function without its docstring, target =
the summary. The docstring is removed from the code in both directions so that code-to-text
cannot copy it. ``completion`` (the seed's task): source = the first share of the function's
characters (half by default), target = the whole function or the rest of it; the code is
CodeSearchNet's, docstring included, as the seed used it. With the ``copy`` objective a training
example is the function and the same function (the seed's ``labels=input_ids``).
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from hybridcl.constants import DIRECTIONS, KINDS, LANGUAGE_NAMES
from hybridcl.data.extract import docstring_summary
from hybridcl.data.provenance import file_records
from hybridcl.data.readers import path_source, read_split
from hybridcl.data.records import Record
from hybridcl.errors import DataError, quote

if TYPE_CHECKING:
    from hybridcl.config.experiment import DataConfig, TaskConfig


@dataclass
class Example:
    id: str
    language: str
    direction: str
    source: str
    target: str


@dataclass
class TaskData:
    """One task's examples; ``report`` holds the counts (records read, skipped, subsampled...)."""

    language: str
    train: list[Example]
    val: list[Example]
    report: dict = field(default_factory=dict)


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise DataError(f"unknown direction {quote(direction)}: choose one of {', '.join(DIRECTIONS)}")


def example_id(record: Record) -> str:
    digest = hashlib.sha256(
        "\n".join((record.repo, record.path, record.func_name, record.code)).encode("utf-8")
    ).hexdigest()[:10]
    return f"{record.language}/{record.repo}/{record.path}::{record.func_name}#{digest}"


def make_examples(
    records: list[Record],
    direction: str,
    *,
    completion_prefix: float = 0.5,
    completion_target: str = "whole",
    copy: bool = False,
) -> list[Example]:
    """One example per record; records whose summary or code-without-docstring is empty are left out.

    ``completion``: the source is ``code[:int(len(code) * completion_prefix)]`` (the seed's
    ``code[:len(code)//2]`` at 0.5), the target the whole ``code`` (``completion_target="whole"``)
    or what follows the source (``"rest"``); records with blank code, or a blank source or target,
    are left out. ``copy`` (completion only): source and target are both the whole function.
    (:func:`load_task_data` reports how many were left out.)
    """
    _check_direction(direction)
    if copy and direction != "completion":
        raise DataError(f"the copy objective needs the completion direction, not {quote(direction)}")
    if completion_target not in ("whole", "rest"):
        raise DataError(
            f"completion_target = {quote(completion_target)}: choose whole or rest (data.completion_target)"
        )
    if direction == "completion":
        return _completion_examples(records, completion_prefix, completion_target, copy)
    out = []
    for record in records:
        summary = docstring_summary(record.docstring)
        code = strip_docstring(record.code, record.language)
        if not summary or not code.strip():
            continue
        source, target = (summary, code) if direction == "text-to-code" else (code, summary)
        out.append(Example(example_id(record), record.language, direction, source, target))
    return out


def _completion_examples(records: list[Record], prefix: float, target: str, copy: bool) -> list[Example]:
    if not 0.0 < prefix < 1.0:
        raise DataError(f"completion_prefix = {prefix}: must be in (0, 1) (data.completion_prefix)")
    out = []
    for record in records:
        code = record.code
        if not code.strip():
            continue
        cut = int(len(code) * prefix)
        source, rest = (code, code) if copy else (code[:cut], code if target == "whole" else code[cut:])
        if not source.strip() or not rest.strip():
            continue
        out.append(Example(example_id(record), record.language, "completion", source, rest))
    return out


_JSDOC_HEAD = re.compile(r"\A\s*/\*\*.*?\*/\s*", re.S)
_PY_DOCSTRING = re.compile(r"(:[^\n]*\n)([ \t]*)(?:[rRuUbB]{0,2})(\"\"\"|''')(.*?)\3[ \t]*\n", re.S)


def strip_docstring(code: str, language: str) -> str:
    """The function's code without its docstring (Python) or leading doc comment (JavaScript, Java, PHP).

    Extracted Go and Ruby functions start at ``func`` / ``def`` (their comments are not part of the code).
    """
    if language == "python":
        return _strip_python_docstring(code)
    if language in ("javascript", "java", "php"):  # CodeSearchNet's Java and PHP code may start with the doc comment
        return _JSDOC_HEAD.sub("", code, count=1)
    return code


def _strip_python_docstring(code: str) -> str:
    try:
        tree = ast.parse(code)
    except SyntaxError:  # e.g. Python 2 code in CodeSearchNet: fall back to the first triple-quoted string
        return _PY_DOCSTRING.sub(r"\1", code, count=1)
    fn = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))), None)
    if fn is None or not fn.body:
        return code
    first = fn.body[0]
    if not (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    ):
        return code
    lines = code.split("\n")
    start, end = first.lineno - 1, first.end_lineno or first.lineno  # 0-based [start, end)
    before = lines[start][: _char_col(lines[start], first.col_offset)]
    rest = lines[end - 1][_char_col(lines[end - 1], first.end_col_offset or 0) :].strip().lstrip(";").strip()
    filler = rest or ("pass" if len(fn.body) == 1 else "")  # a body that was only the docstring stays valid
    if before.strip():  # `def f(): "doc"` on one line
        lines[start:end] = [f"{before.rstrip()} {filler}"]
    elif filler:
        lines[start:end] = [before + filler]
    else:
        del lines[start:end]
    return "\n".join(lines)


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def prompt_template(language: str, direction: str, kind: str, prompt: str = "named") -> tuple[str, str]:
    """``(prefix, suffix)`` put around the source text to make the prompt; ``("", "")`` for
    ``prompt="raw"`` (``data.prompt``: the source alone, as the seed prompted its completions).

    Every template names the language, whatever the model kind: strategies that share weights
    across tasks (``joint``, ``full_finetune``, ``replay``, ``ewc``, ``o_lora``, a shared layer)
    can only tell which language is wanted from the prompt. seq2seq models get CodeT5's
    multi-task prefixes (``Generate Python: `` / ``Summarize Python: ``, Wang et al. 2021);
    causal models a cue after the source, since they continue the prompt's end. Task-agnostic
    routing scores the bare source without this template, so the template cannot leak the task.
    """
    _check_direction(direction)
    if kind not in KINDS:
        raise DataError(f"unknown model kind {quote(kind)}: choose one of {', '.join(KINDS)}")
    if prompt not in ("named", "raw"):
        raise DataError(f"prompt = {quote(prompt)}: choose named or raw (data.prompt)")
    if prompt == "raw":
        return "", ""
    name = LANGUAGE_NAMES.get(language, language.capitalize())
    if direction == "completion":  # the same cue whether the target is the whole function or the rest
        return (
            (f"Complete {name}: ", "")
            if kind == "seq2seq"
            else (f"Complete this {name} function.\nStart:\n", "\nCompletion:\n")
        )
    if kind == "seq2seq":
        return (f"Generate {name}: " if direction == "text-to-code" else f"Summarize {name}: "), ""
    if direction == "text-to-code":
        return f"{name} function.\nDescription: ", "\nCode:\n"
    return f"{name} code:\n", "\nDescription:\n"


def format_prompt(
    example_or_source: str | Example, language: str, direction: str, kind: str, prompt: str = "named"
) -> str:
    """The model input for a source text: :func:`prompt_template`'s prefix + source + suffix.

    seq2seq: ``"Generate Python: {doc}"`` (text-to-code), ``"Summarize Python: {code}"``
    (code-to-text) or ``"Complete Python: {start}"`` (completion). causal:
    ``"Python function.\\nDescription: {doc}\\nCode:\\n"`` (text-to-code),
    ``"Python code:\\n{code}\\nDescription:\\n"`` (code-to-text) or
    ``"Complete this Python function.\\nStart:\\n{start}\\nCompletion:\\n"`` (completion).
    """
    source = example_or_source.source if isinstance(example_or_source, Example) else example_or_source
    prefix, suffix = prompt_template(language, direction, kind, prompt)
    return f"{prefix}{source}{suffix}"


def _draw(
    examples: list[Example],
    n: int | None,
    seed: int,
    too_long: Callable[[list[Example]], list[bool]] | None,
    drop: bool,
) -> tuple[list[Example], int, int]:
    """``(kept, checked, long)``: up to ``n`` examples (all if ``n`` is None), in file order.

    The sample is drawn in a fixed order (a hash of ``seed`` and the example id), so it does not
    depend on the file order. With ``drop``, examples whose target is too long are skipped and the
    next ones in that order take their place, so a task still gets ``n`` examples; only the
    examples looked at are tokenised (a sample of 8K from 400K costs 8K and a few more).
    ``checked`` counts the examples whose length was looked at, ``long`` those too long.
    """
    if n is None or len(examples) <= n:
        order = list(range(len(examples)))
    else:
        order = sorted(
            range(len(examples)), key=lambda i: hashlib.sha256(f"{seed}\n{examples[i].id}".encode()).digest()
        )
    if too_long is None:
        chosen = order[:n]
        checked = n_long = 0
    elif not drop:
        chosen = order[:n]
        flags = too_long([examples[i] for i in chosen])
        checked, n_long = len(chosen), sum(flags)
    else:
        chosen, checked, n_long = [], 0, 0
        while checked < len(order) and (n is None or len(chosen) < n):
            block = order[checked:] if n is None else order[checked : checked + n - len(chosen)]
            flags = too_long([examples[i] for i in block])
            chosen += [i for i, long in zip(block, flags, strict=True) if not long]
            checked += len(block)
            n_long += sum(flags)
    return [examples[i] for i in sorted(chosen)], checked, n_long


def _first_rows(
    examples: list[Example], too_long: Callable[[list[Example]], list[bool]] | None, drop: bool
) -> tuple[list[Example], int, int]:
    """``(kept, checked, long)`` like :func:`_draw`, for rows already selected by position."""
    if too_long is None:
        return examples, 0, 0
    flags = too_long(examples)
    kept = [e for e, long in zip(examples, flags, strict=True) if not (drop and long)]
    return kept, len(examples), sum(flags)


EVAL_SPLITS = ("valid", "test")


def _no_examples(where: str, split: str, language: str, counts: dict, data_cfg: DataConfig) -> DataError:
    """The error for a split left empty, saying which filter emptied it (``counts``: its report)."""
    if counts.get("long_targets"):
        return DataError(
            f"{where}: no {split} examples for {language}: all {counts['long_targets']} targets are longer "
            f"than data.max_target_len = {data_cfg.max_target_len} tokens; raise it or set data.long_targets=cut"
        )
    return DataError(
        f"{where}: no {split} examples for {language} ({counts['records']} records, "
        f"{counts['skipped_empty']} with an empty docstring summary or code, "
        f"{counts['skipped_too_long']} longer than data.max_record_bytes={data_cfg.max_record_bytes}); "
        "use a source with documented functions"
    )


def task_data_config(data_cfg: DataConfig, task: TaskConfig) -> DataConfig:
    """The run's data settings as they apply to ``task``: its direction, its data and its sizes."""
    changes: dict = {"direction": task.direction}
    if task.data in ("bundled", "hf"):
        changes |= {"source": task.data, "path": None}
    elif task.data is not None:
        assert task.language is not None  # resolved by the config
        changes |= {"source": path_source(task.data, task.language), "path": task.data}
    for size in ("max_train", "max_val"):
        if (value := getattr(task, size)) is not None:
            changes[size] = value
    return replace(data_cfg, **changes)


def data_sources(data_cfg: DataConfig, tasks: list[TaskConfig]) -> dict[str, tuple[str, str | None]]:
    """Each task's data source and path now: what its recorded files are checked against."""
    return {t.name: (c.source, c.path) for t in tasks for c in [task_data_config(data_cfg, t)]}


def load_task_data(
    data_cfg: DataConfig,
    language: str,
    seed: int = 0,
    eval_split: str = "valid",
    *,
    train_seed: int | None = None,
    target_lengths: Callable[[list[Example]], list[int]] | None = None,
    with_train: bool = True,
) -> TaskData:
    """Read the train records and the ``eval_split`` records of ``language`` and make examples.

    ``eval_split`` (``valid`` or ``test``, the config's ``eval.split``) is the split that
    :attr:`TaskData.val` holds, and the one every matrix cell is scored on. ``max_train`` /
    ``max_val`` keep a deterministic subsample (a hash of ``seed`` and each example id; the kept
    examples stay in file order); ``max_val`` caps whichever split is scored. ``train_seed`` (default:
    ``seed``) draws the training sample alone, so a run's random seeds can train on different
    examples while the evaluation set (drawn with ``seed``) stays the same. With
    ``data_cfg.selection == "first_rows"`` (the seed's) only the train split is read: its rows
    ``[0, max_train)`` train and rows ``[max_train, max_train + max_val)`` are the evaluation set,
    in file order, nothing drawn. ``target_lengths``
    gives each example's target length in tokens as training sees it
    (:func:`hybridcl.data.batching.target_length_counter`); targets longer than
    ``data_cfg.max_target_len`` are then, with ``long_targets: drop`` (the default), left out of
    both splits, so the model is never taught to stop mid-function nor scored on such a function;
    with ``long_targets: cut`` they are kept (training cuts them, with no end-of-sequence token).
    Without ``target_lengths`` no length is checked. Without ``with_train`` (evaluation only) no
    training split is read and ``train`` is empty. ``report[split]`` counts them:
    ``long_targets_checked`` examples looked at, ``long_targets`` too long. Raises
    :class:`DataError` if a split is empty.

    Longer than 60 lines on purpose: both splits go through the same steps (read, examples, draw,
    report) with the reference experiment's first-rows selection threaded through each; apart, a reader
    would follow that selection across several functions.
    """
    if eval_split not in EVAL_SPLITS:
        raise DataError(f"eval.split = {quote(eval_split)}: choose valid or test")
    report: dict = {
        "language": language,
        "source": data_cfg.source,
        "direction": data_cfg.direction,
        "eval_split": eval_split,
    }
    if target_lengths is not None:
        report["long_targets"] = {"mode": data_cfg.long_targets, "max_target_len": data_cfg.max_target_len}
        too_long = lambda exs: [n > data_cfg.max_target_len for n in target_lengths(exs)]  # noqa: E731
    else:
        too_long = None
    splits: dict[str, list[Example]] = {"train": []}
    first_rows = data_cfg.selection == "first_rows"
    if first_rows:
        if eval_split != "valid":
            raise DataError(
                f"data.selection = first_rows evaluates on the train split's rows after the training rows; "
                f"eval.split = {eval_split} has no meaning there: set eval.split=valid"
            )
        report["selection"] = "first_rows"
        first_skipped: Counter = Counter()
        train_records, train_files = read_split(
            data_cfg.source,
            data_cfg.path,
            language,
            "train",
            max_record_bytes=data_cfg.max_record_bytes,
            skipped=first_skipped,
        )
        n_train = data_cfg.max_train if data_cfg.max_train is not None else len(train_records)
        n_val = data_cfg.max_val if data_cfg.max_val is not None else len(train_records)
        rows = {"train": train_records[:n_train], eval_split: train_records[n_train : n_train + n_val]}
    for split, cap in (("train", data_cfg.max_train), (eval_split, data_cfg.max_val))[0 if with_train else 1 :]:
        skipped: Counter = Counter()
        if first_rows:
            records, files, skipped = rows[split], train_files, first_skipped
        else:
            records, files = read_split(
                data_cfg.source,
                data_cfg.path,
                language,
                split,
                max_record_bytes=data_cfg.max_record_bytes,
                skipped=skipped,
            )
        examples = make_examples(
            records,
            data_cfg.direction,
            completion_prefix=data_cfg.completion_prefix,
            completion_target=data_cfg.completion_target,
            copy=split == "train" and data_cfg.train_objective == "copy",
        )
        if first_rows:  # the seed's rows as they are: a too-long example is dropped, not replaced
            kept, checked, n_long = _first_rows(examples, too_long, drop=data_cfg.long_targets == "drop")
        else:
            draw_seed = seed if split != "train" or train_seed is None else train_seed
            kept, checked, n_long = _draw(examples, cap, draw_seed, too_long, drop=data_cfg.long_targets == "drop")
        report[split] = {
            "files": file_records(files, data_cfg.source, data_cfg.path),
            "records": len(records),
            "skipped_too_long": skipped["too_long"],
            "skipped_empty": len(records) - len(examples),
            "examples": len(examples),
            "kept": len(kept),
        }
        if too_long is not None:
            report[split].update(long_targets_checked=checked, long_targets=n_long)
        if not kept:
            raise _no_examples(files[0] if files else data_cfg.source, split, language, report[split], data_cfg)
        splits[split] = kept
    return TaskData(language, splits["train"], splits[eval_split], report)
