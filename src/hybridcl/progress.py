"""Progress for a terminal and for a log file.

On a terminal, :func:`progress_bar` is a tqdm bar. When stderr is not a terminal (a log file, a
pipe, a batch job), redrawing a bar writes carriage returns and partial lines into the log, so
the bar becomes :class:`LineProgress`: one plain line when it ends (and one every
``LINE_INTERVAL_S`` seconds while it runs), with the bar's postfix. ``enabled=False`` (the
``--no-progress`` flag) shows nothing; :func:`note` lines (a stage trained, a row evaluated) go to
the ``hybridcl`` logger, which the command line prints either way (:func:`log_to_stderr`), so a run
without bars still says where it is.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

LINE_INTERVAL_S = 60.0  # a long bar in a log prints a line this often (seconds)


LOGGER = logging.getLogger("hybridcl")


def note(message: str) -> None:
    """One line of progress (a stage trained, a row evaluated) for the ``hybridcl`` logger."""
    LOGGER.info(message)


class _Stderr(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (a test's capture too) as ``hybridcl: message``."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"hybridcl: {record.getMessage()}", file=sys.stderr, flush=True)


def log_to_stderr() -> None:
    """Print :func:`note` lines on stderr (the command line calls this once)."""
    if not any(isinstance(h, _Stderr) for h in LOGGER.handlers):
        LOGGER.addHandler(_Stderr())
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


class LineProgress:
    """The part of tqdm's interface hybridcl uses, written as whole lines (no carriage returns)."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", iterable=None):
        self.total, self.desc, self.unit, self.iterable = total, desc, unit, iterable
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= LINE_INTERVAL_S:
            self._line()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self) -> None:
        self.last = time.monotonic()
        total = f"/{self.total}" if self.total is not None else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: {self.n}{total} {self.unit} in {self.last - self.start:.1f} s{postfix}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line()


def progress_bar(
    iterable=None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    initial: int = 0,
):
    """A progress bar: tqdm on a terminal, :class:`LineProgress` in a log, silent when not ``enabled``;
    ``initial``: the count it starts from (a task resumed mid-way)."""
    if enabled and not sys.stderr.isatty():
        bar = LineProgress(total if iterable is None or total is not None else _len(iterable), desc, unit, iterable)
        bar.n = initial
        return bar
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, initial=initial)


def _len(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None
