"""The serving engine: one loaded run, a bounded queue of requests and one worker that batches them.

Requests wait in a queue of at most ``max_queue``; a full queue is refused at once (:class:`Busy`)
instead of growing memory. The worker takes what is waiting (up to ``max_batch``), groups it by task
(``auto`` requests go together: the run's router splits them) and by generation settings, and
generates each group in one call of :meth:`~hybridcl.inference.load.LoadedRun.generate`, the code
``hybridcl generate`` runs, so a greedy request gets the tokens ``hybridcl generate`` gives. A request
cancelled while it waits (its client went away) is dropped before it is generated. Between batches
the worker looks at the run folder: when the run has learned more tasks (``hybridcl learn``) and
finished them, it loads the grown run and serves its tasks from the next batch on; requests in the
queue wait for it and none is dropped. The model is used by the worker thread alone.
"""

from __future__ import annotations

import copy
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from hybridcl.errors import HybridclError
from hybridcl.inference.load import LoadedRun, load_run
from hybridcl.progress import note


class Busy(HybridclError):
    """The queue is full: the client should retry later."""


@dataclass(frozen=True)
class Settings:
    """One request's generation settings (``None``: the run's own, as ``hybridcl generate`` uses them)."""

    max_new_tokens: int | None = None
    temperature: float | None = None  # 0: greedy
    top_p: float | None = None
    seed: int = 0

    def generate_kwargs(self) -> dict:
        out: dict = {"seed": self.seed}
        if self.max_new_tokens is not None:
            out["max_new_tokens"] = self.max_new_tokens
        if self.temperature is not None:
            out["do_sample"] = self.temperature > 0
            if self.temperature > 0:
                out["temperature"] = self.temperature
        if self.top_p is not None:
            out["top_p"] = self.top_p
        return out


@dataclass
class Request:
    task: str  # a task of the run, or "auto"
    prompt: str
    settings: Settings
    future: Future = field(default_factory=Future)  # -> (text, the task that served it)


class Engine:
    """Serves one run's tasks from one base model; :meth:`submit` from any thread."""

    def __init__(self, run_dir: Path, *, seed: int | None = None, max_queue: int = 64, max_batch: int = 16):
        self.run_dir, self.seed, self.max_batch = Path(run_dir), seed, max_batch
        self._use(load_run(self.run_dir, seed=seed))
        self._stamp = self._state_stamp()
        self._queue: queue.Queue[Request] = queue.Queue(max_queue)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._serve, name="hybridcl-engine", daemon=True)

    def _use(self, run: LoadedRun) -> None:
        # the worker's tokenizer is the run's; request threads count tokens with their own copy (a fast
        # tokenizer used from two threads at once can fail with "Already borrowed")
        self.run, self._counter = run, copy.deepcopy(run.tokenizer)
        self._counting = threading.Lock()

    @property
    def tasks(self) -> list[str]:
        return self.run.tasks

    def count_tokens(self, text: str, *, special: bool = True) -> int:
        """Tokens of ``text`` as the base's tokenizer reads it (any thread)."""
        with self._counting:
            return len(self._counter(text, add_special_tokens=special)["input_ids"])

    def start(self) -> Engine:
        self._worker.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in progress, then stop; requests still waiting fail with :class:`Busy`."""
        self._stop.set()
        self._worker.join(timeout)
        while True:
            try:
                self._queue.get_nowait().future.set_exception(Busy("the server is stopping"))
            except queue.Empty:
                return

    def submit(self, task: str, prompt: str, settings: Settings) -> Future:
        """Queue one prompt; the future's result is ``(text, task)``. Raises :class:`Busy` when full."""
        if self._stop.is_set():
            raise Busy("the server is stopping")
        request = Request(self.run.check_task(task), prompt, settings)
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise Busy(f"{self._queue.maxsize} requests are waiting already") from None
        return request.future

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.05)
            except queue.Empty:
                self._reload_if_grown()
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._reload_if_grown()
            for group in _groups(batch):
                self._generate([r for r in group if r.future.set_running_or_notify_cancel()])

    def _generate(self, group: list[Request]) -> None:
        if not group:
            return
        task, settings = group[0].task, group[0].settings
        try:
            texts, chosen = self.run.generate(
                task, [r.prompt for r in group], return_tasks=True, **settings.generate_kwargs()
            )
        except Exception as exc:  # the requests fail, the server goes on
            for r in group:
                r.future.set_exception(exc)
            return
        for r, text, served in zip(group, texts, chosen, strict=True):
            r.future.set_result((text, served))

    def _state_stamp(self) -> tuple[int, int] | None:
        state = self.run_dir / f"seed-{self.run.seed}" / "state.json"
        try:
            stat = state.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _reload_if_grown(self) -> None:
        """Load the run again once it has finished learning more tasks (``hybridcl learn``)."""
        stamp = self._state_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        from hybridcl.records.run_dir import SeedDir, load_run_config

        try:
            config = load_run_config(self.run_dir)
            state = SeedDir(self.run_dir, self.run.seed).load_state()
        except HybridclError:  # mid-write: look again at the next batch
            self._stamp = None
            return
        if config.task_names == self.run.tasks or not state.finished_on(config.task_names):
            return
        grown = load_run(self.run_dir, seed=self.seed)
        note(f"serving {len(grown.tasks)} tasks now: {', '.join(grown.tasks)}")
        self._use(grown)


def _groups(batch: list[Request]) -> list[list[Request]]:
    """The batch's requests by (task, settings), ``auto`` ones together, in arrival order."""
    groups: dict[tuple[str, Settings], list[Request]] = {}
    for r in batch:
        groups.setdefault((r.task, r.settings), []).append(r)
    return list(groups.values())
