"""The ``hybridcl`` command line.

    hybridcl run [preset=NAME] [key=value ...]      train and evaluate a task sequence
    hybridcl run ... --sweep KEY=V1,V2              one run per combination of values, then the comparison
    hybridcl run --resume RUN_DIR                   continue an interrupted run or sweep
    hybridcl config show [preset=NAME] [key=value ...]  print the resolved config (every key) without running
    hybridcl eval RUN_DIR [eval.key=value ...]      re-evaluate a finished run's checkpoints
    hybridcl learn RUN_DIR TASK...                  teach a finished run (or sweep) more tasks
    hybridcl params [preset=NAME] [key=value ...]   the architecture and parameter table
    hybridcl data extract|build|stats ...           build record files and the bundled corpus
    hybridcl setup                                  put the embedded model in place (offline)
    hybridcl report RUN_DIR                         (re)write report.md and its plots
    hybridcl compare RUN_DIR... [--out DIR]         cross-strategy table and bar charts
    hybridcl generate --run RUN_DIR --task T|auto [--json] PROMPT...
    hybridcl export --run RUN_DIR --task T --merged OUT | --peft OUT
    hybridcl serve RUN_DIR [--host 127.0.0.1] [--port 8000]   an OpenAI-compatible server of the run's tasks

Errors a user can fix print one line and exit with code 2 (``--debug`` shows the traceback).
``key=value`` overrides may come before or after a command's options.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from hybridcl.errors import HybridclError, describe_os_error
from hybridcl.progress import log_to_stderr


def _parser() -> argparse.ArgumentParser:
    from hybridcl import __version__
    from hybridcl.config.experiment import preset_names

    parser = argparse.ArgumentParser(
        prog="hybridcl", description="Continual learning of code models with hybrid PEFT components."
    )
    parser.add_argument("--version", action="version", version=f"hybridcl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="train and evaluate a task sequence",
        description=(
            f"Overrides: preset=NAME config=FILE key.sub=value ... Presets: {', '.join(preset_names())} "
            "(default: default). `hybridcl config show [preset=NAME] [key=value ...]` prints every key "
            "and its resolved value without running."
        ),
    )
    run.add_argument("overrides", nargs="*", help="preset=NAME, config=FILE.yaml, or key=value (e.g. train.epochs=1)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run (or sweep) in RUN_DIR with its saved config")
    run.add_argument(
        "--sweep",
        action="append",
        metavar="KEY=V1,V2",
        help="run every combination of these values (repeatable), e.g. --sweep components.lora.r=4,8",
    )
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.set_defaults(func=_run)

    evaluate = sub.add_parser(
        "eval",
        help="re-evaluate a finished run's checkpoints",
        description="Recomputes the matrices, CL metrics and report; eval.* overrides change decoding.",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("overrides", nargs="*", help="eval.key=value, e.g. eval.num_beams=4 eval.max_examples=200")
    evaluate.add_argument(
        "--data",
        metavar="DIR",
        help="score on other data: a folder of <language>.<split>.jsonl[.gz] record files (needs --out)",
    )
    evaluate.add_argument("--out", metavar="DIR", help="write the results to this new folder; the run is not changed")
    evaluate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    evaluate.set_defaults(func=_eval)

    learn = sub.add_parser(
        "learn",
        help="teach a finished run (or every run of a finished sweep) more tasks",
        description="Trains the new tasks' stages after the run's own, as if the run had had them from the "
        "start, and rewrites its results, report and (for a sweep) comparison.",
    )
    learn.add_argument("run_dir", metavar="RUN_DIR")
    learn.add_argument(
        "tasks",
        nargs="+",
        metavar="TASK",
        help="a language of the bundled corpus (go), or a YAML file of a task record ({name, language, direction, "
        "data}) or of `tasks: [record, ...]`",
    )
    learn.add_argument("--no-progress", action="store_true", help="hide progress bars")
    learn.set_defaults(func=_learn)

    params = sub.add_parser("params", help="print the architecture and parameter table")
    params.add_argument("overrides", nargs="*", help="preset=NAME or key=value")
    params.set_defaults(func=_params)

    setup = sub.add_parser("setup", help="convert the embedded model to a safetensors folder (once, offline)")
    setup.set_defaults(func=_setup)

    from hybridcl.data.cli import add_commands

    add_commands(sub)
    _add_report_commands(sub)
    _add_config_command(sub)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; ``key=value`` overrides may also follow a command's options
    (argparse takes positionals in one run only, so the ones after an option come back as extras)."""
    parser = _parser()
    argv, sweeps = _take_sweeps(list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not isinstance(getattr(args, "overrides", None), list) or any(
            e.startswith("-") or "=" not in e for e in extra
        ):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if sweeps:
        args.sweep = [*(args.sweep or []), *sweeps]
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    args.run_folder = None  # set by `run` once it knows its folder, for the messages below
    _quiet_libraries()
    log_to_stderr()
    try:
        result = args.func(args)
    except HybridclError as exc:
        if args.debug:
            raise
        print(f"hybridcl: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write or read outside hybridcl.records.io (logs, caches, plots, exports): still one line
        if args.debug:
            raise
        message = describe_os_error(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and args.run_folder:
            message = (
                f"{exc.filename or args.run_folder}: disk full: free space and continue with "
                f"`hybridcl run --resume {args.run_folder}`"
            )
        print(f"hybridcl: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(exc, args.run_folder)
    return result or 0


def _interrupted(exc: KeyboardInterrupt, run_folder) -> int:
    """The line after Ctrl-C or SIGTERM, and the exit code (128 + the signal)."""
    step = getattr(exc, "step", None)  # train_state.TrainingInterrupted: stopped after a checkpoint
    if step is None or not getattr(exc, "saved", False):
        saved = "finished tasks are saved"
    else:
        saved = f"saved at step {step} of task {getattr(exc, 'task', '?')}"
    resume = f": continue with `hybridcl run --resume {run_folder}`" if run_folder else ""
    print(f"hybridcl: interrupted; {saved}{resume}" if run_folder else "hybridcl: interrupted", file=sys.stderr)
    return 128 + getattr(exc, "signum", 2)


def _take_sweeps(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull ``--sweep KEY=V1,V2`` out of ``run``'s arguments: argparse rejects an option between positionals."""
    if "run" not in argv:
        return argv, []
    rest, sweeps = argv[: argv.index("run") + 1], []
    items = iter(argv[len(rest) :])
    for item in items:
        if item == "--sweep":
            sweeps.append(next(items, ""))
        elif item.startswith("--sweep="):
            sweeps.append(item.removeprefix("--sweep="))
        else:
            rest.append(item)
    return rest, sweeps


def _quiet_libraries() -> None:
    """hybridcl shows its own progress bars; the libraries' load bars and deprecation notes are noise here."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # torch's safe unpickler notes the protocol before it refuses a pickle; hybridcl's own error says more.
    warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)


def _run(args) -> int:
    from hybridcl.config.experiment import build_config, raw_config
    from hybridcl.config.sweep import is_sweep, load_sweep, new_sweep_dir, sweep_axes, sweep_points, write_sweep
    from hybridcl.continual import run_experiment
    from hybridcl.errors import ConfigError, RunError
    from hybridcl.model.budget import check_architecture
    from hybridcl.records.run_dir import RunLocked, load_run_config, new_run_dir

    progress = not args.no_progress
    if args.resume:
        if args.overrides or args.sweep:
            raise RunError("--resume takes no overrides: a resumed run keeps the config it was started with")
        run_dir = Path(args.resume)
        if is_sweep(run_dir):
            points = load_sweep(run_dir)
            if all(_finished(run_dir / p.name, p.config) for p in points):
                print(f"hybridcl: sweep {run_dir} is finished: nothing to do ({run_dir / 'comparison.md'})")
                return 0
            return _run_sweep(run_dir, points, progress)
        config = load_run_config(run_dir)
        if _finished(run_dir, config):
            print(f"hybridcl: run {run_dir} is finished: nothing to do (report: {run_dir / 'report.md'})")
            return 0
    else:
        raw = raw_config(overrides=args.overrides)
        axes = sweep_axes(raw, args.sweep)
        if axes:
            points = sweep_points(raw, axes)
            for point in points:
                try:
                    check_architecture(point.config)
                except ConfigError as exc:
                    raise ConfigError(f"sweep point {point.values}: {exc}") from None
                _check_sandbox(point.config)
            run_dir = new_sweep_dir(raw, axes)
            write_sweep(run_dir, axes, points)
            return _run_sweep(run_dir, points, progress)
        config = build_config(raw)
        check_architecture(config)
        _check_sandbox(config)
        run_dir = new_run_dir(config)
    fresh = not run_dir.exists()
    args.run_folder = run_dir
    print(f"hybridcl: run folder {run_dir}", file=sys.stderr)
    try:
        run_experiment(config, run_dir, progress=progress)
    except RunLocked:
        raise  # the folder is another live run's: never remove it
    except (HybridclError, OSError):
        if fresh:
            _remove_unstarted(run_dir)
        raise
    if _main_process():
        from hybridcl.report.markdown import write_report
        from hybridcl.report.summary import run_summary

        write_report(run_dir)
        print(run_summary(run_dir), file=sys.stderr)
        print(run_dir)
    return 0


def _run_sweep(sweep_dir: Path, points, progress: bool) -> int:
    from hybridcl.continual import run_experiment

    runs = f"{len(points)} run" + ("s" if len(points) != 1 else "")
    print(f"hybridcl: sweep folder {sweep_dir} ({runs})", file=sys.stderr)
    for point in points:
        print(f"hybridcl: run {point.name}", file=sys.stderr)
        run_experiment(point.config, sweep_dir / point.name, progress=progress)
    if _main_process():
        _write_sweep_reports(sweep_dir, [p.name for p in points])
        print(f"hybridcl: comparison of {len(points)} runs: {sweep_dir / 'comparison.md'}", file=sys.stderr)
        print(sweep_dir)
    return 0


def _write_sweep_reports(sweep_dir: Path, names: list[str]) -> None:
    from hybridcl.report.compare import compare_runs
    from hybridcl.report.markdown import write_report

    for name in names:
        write_report(sweep_dir / name)
    compare_runs([sweep_dir / name for name in names], sweep_dir)


def _finished(run_dir: Path, config) -> bool:
    """Every seed of the run finished and its results written: a resume has nothing to do."""
    from hybridcl.records.run_dir import SeedDir

    seeds = [SeedDir(run_dir, seed) for seed in config.run.seeds]
    return (run_dir / "results.json").is_file() and all(
        s.first_unreadable_stage(st := s.load_state()) is None and st.finished_on(config.task_names) for s in seeds
    )


def _main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _remove_unstarted(run_dir: Path) -> None:
    """A new run that failed before saving any progress (no state.json yet: bad data, a missing
    model, a full disk) leaves no folder behind; one with progress stays, for --resume."""
    import shutil

    if run_dir.is_dir() and not any(run_dir.rglob("state.json")):
        shutil.rmtree(run_dir, ignore_errors=True)


def _check_sandbox(config) -> None:
    """Refuse before training, not after, when HumanEval's generated code could not be isolated; say
    which protections it will run under."""
    if config.eval.humaneval:
        from hybridcl.evaluation.sandbox import isolation_protections

        protections = isolation_protections(config.eval.allow_unsandboxed)
        print(f"hybridcl: sandbox protections: {', '.join(protections)}", file=sys.stderr)


def _eval(args) -> int:
    from hybridcl.config.sweep import is_sweep, load_sweep
    from hybridcl.continual import evaluate_run
    from hybridcl.report.markdown import write_report

    run_dir = Path(args.run_dir)
    data = Path(args.data) if args.data else None
    out = Path(args.out) if args.out else None
    if is_sweep(run_dir):
        names = [p.name for p in load_sweep(run_dir)]
        target = out or run_dir
        for name in names:
            _data_notes(run_dir / name)
            evaluate_run(
                run_dir / name,
                args.overrides,
                data=data,
                out=out / name if out else None,
                progress=not args.no_progress,
            )
        _write_sweep_reports(target, names)
    else:
        _data_notes(run_dir)
        target = evaluate_run(run_dir, args.overrides, data=data, out=out, progress=not args.no_progress)
        write_report(target)
    print(target)
    return 0


def _learn(args) -> int:
    from hybridcl.config.experiment import task_records
    from hybridcl.config.sweep import is_sweep, load_sweep
    from hybridcl.continual import learn_tasks
    from hybridcl.errors import ConfigError

    if settings := [t for t in args.tasks if "=" in t]:
        raise ConfigError(
            f"hybridcl learn takes tasks, not settings ({settings[0]}): the run keeps its model, strategy and "
            "settings (its config.yaml); start a new run for others"
        )
    tasks = [record for item in args.tasks for record in task_records(item)]
    run_dir = args.run_folder = Path(args.run_dir)
    progress = not args.no_progress
    if is_sweep(run_dir):
        names = [p.name for p in load_sweep(run_dir)]
        for name in names:
            print(f"hybridcl: run {name} learns {', '.join(args.tasks)}", file=sys.stderr)
            learn_tasks(run_dir / name, tasks, progress=progress)
        if _main_process():
            _write_sweep_reports(run_dir, names)
            print(run_dir)
        return 0
    learn_tasks(run_dir, tasks, progress=progress)
    if _main_process():
        from hybridcl.report.markdown import write_report
        from hybridcl.report.summary import run_summary

        write_report(run_dir)
        print(run_summary(run_dir), file=sys.stderr)
        print(run_dir)
    return 0


def _params(args) -> int:
    from hybridcl.config.experiment import load_config
    from hybridcl.model.budget import params_table

    print(params_table(load_config(overrides=args.overrides)))
    return 0


def _setup(args) -> int:
    from hybridcl.model.loading import EMBEDDED, embedded_folder

    for key in EMBEDDED:
        print(f"embedded:{key} -> {embedded_folder(key)}")
    return 0


def _add_report_commands(sub) -> None:
    report = sub.add_parser("report", help="(re)write a run's report.md and plots")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.set_defaults(func=_report)

    compare = sub.add_parser("compare", help="compare finished runs: table, best per column, bar charts")
    compare.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (a sweep folder expands to its runs)"
    )
    compare.add_argument("--out", metavar="DIR", help="output folder (default: the runs' common parent folder)")
    compare.set_defaults(func=_compare)

    gen = sub.add_parser("generate", help="generate with a run's components for one task (or --task auto)")
    gen.add_argument(
        "prompts",
        nargs="+",
        metavar="PROMPT",
        help="docstrings (text-to-code), code (code-to-text) or the start of a function (completion)",
    )
    gen.add_argument("--run", required=True, metavar="RUN_DIR")
    gen.add_argument("--task", required=True, help="a task of the run, or auto (chosen per prompt by routing)")
    gen.add_argument("--seed", type=int, help="which seed's components (default: the run's first seed)")
    gen.add_argument("--max-new-tokens", type=int, help="default: the run's eval.max_new_tokens")
    gen.add_argument("--num-beams", type=int, help="default: the run's eval.num_beams")
    gen.add_argument("--do-sample", action=argparse.BooleanOptionalAction, help="sample instead of greedy/beam search")
    gen.add_argument("--temperature", type=float, help="sampling temperature (with --do-sample)")
    gen.add_argument("--top-p", type=float, help="nucleus sampling's probability mass (with --do-sample)")
    gen.add_argument("--json", action="store_true", help="print one JSON object per prompt: prompt, task, output")
    gen.set_defaults(func=_generate)

    serve = sub.add_parser(
        "serve",
        help="serve a run's tasks over an OpenAI-compatible HTTP API (model = a task or auto)",
        description="POST /v1/completions and /v1/chat/completions, GET /v1/models and /health. Binds 127.0.0.1 "
        "unless --host says otherwise; another address needs --api-key. A task the run learns later "
        "(hybridcl learn) is served without a restart.",
    )
    serve.add_argument("run_dir", metavar="RUN_DIR")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=os.environ.get("HYBRIDCL_API_KEY"), help="require Bearer KEY")
    serve.add_argument("--seed", type=int, help="which seed's components (default: the run's first)")
    serve.add_argument("--max-queue", type=int, default=64, help="requests waiting at most; more get 429")
    serve.add_argument("--max-batch", type=int, default=16, help="requests generated together at most")
    serve.add_argument("--max-prompt-tokens", type=int, help="longest prompt (default: the run's data.max_source_len)")
    serve.add_argument("--max-tokens", type=int, default=512, help="largest max_tokens a request may ask for")
    serve.add_argument("--grace", type=float, default=30.0, help="seconds SIGTERM lets requests in flight finish")
    serve.set_defaults(func=_serve)

    export = sub.add_parser("export", help="export one task's model: merged transformers folder or PEFT adapter")
    export.add_argument("--run", required=True, metavar="RUN_DIR")
    export.add_argument("--task", required=True)
    export.add_argument("--seed", type=int, help="which seed's components (default: the run's first seed)")
    form = export.add_mutually_exclusive_group(required=True)
    form.add_argument(
        "--merged", metavar="OUT", help="a plain Hugging Face model folder (LoRA merged, full layer as a real layer)"
    )
    form.add_argument("--peft", metavar="OUT", help="the task's LoRA adapter in PEFT's format (LoRA-only strategies)")
    export.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="then upload the folder to this Hugging Face Hub repository (created if missing; needs a login)",
    )
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    export.set_defaults(func=_export)


def _add_config_command(sub) -> None:
    config = sub.add_parser("config", help="show the resolved config")
    commands = config.add_subparsers(dest="config_command", required=True)
    show = commands.add_parser(
        "show",
        help="print every config key with its resolved value (preset, file and overrides applied)",
        description="Prints the YAML `hybridcl run` with the same arguments would write as the run's config.yaml.",
    )
    show.add_argument("overrides", nargs="*", help="preset=NAME, config=FILE.yaml, or key=value")
    show.set_defaults(func=_config_show)


def _config_show(args) -> int:
    from hybridcl.config.experiment import dump_yaml, load_config

    print(dump_yaml(load_config(overrides=args.overrides)), end="")
    return 0


def _report(args) -> int:
    from hybridcl.report.markdown import write_report

    _data_notes(Path(args.run_dir))
    print(write_report(Path(args.run_dir)))
    return 0


def _data_notes(run_dir: Path) -> None:
    """One stderr line per data file the run recorded that is missing here or has another sha256."""
    from hybridcl.data.provenance import check_data_files
    from hybridcl.data.tasks import data_sources
    from hybridcl.records.io import read_json
    from hybridcl.records.run_dir import load_run_config

    if not (run_dir / "results.json").is_file() or not (run_dir / "config.yaml").is_file():
        return
    config = load_run_config(run_dir)
    try:
        recorded = read_json(run_dir / "results.json")
    except HybridclError:  # a damaged results.json: `hybridcl eval` rebuilds it, `report` says so itself
        return
    for note in check_data_files(recorded, data_sources(config.data, config.tasks)):
        print(f"hybridcl: note: {note}", file=sys.stderr)


def _compare(args) -> int:
    from hybridcl.config.sweep import is_sweep
    from hybridcl.report.compare import compare_runs

    run_dirs = [Path(d).resolve() for d in args.run_dirs]
    if args.out:
        out = Path(args.out)
    elif len(run_dirs) == 1 and not is_sweep(run_dirs[0]):  # never into the run folder itself
        out = run_dirs[0].parent
    else:
        out = Path(os.path.commonpath([str(d) for d in run_dirs]))
    print(_relative(compare_runs([Path(d) for d in args.run_dirs], out)))
    return 0


def _relative(path: Path) -> Path:
    """``path`` relative to the working folder when it lies below it, as the user typed it."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


_GENERATE_FLAGS = ("max_new_tokens", "num_beams", "do_sample", "temperature", "top_p")


def _generate(args) -> int:
    import json

    from hybridcl.errors import ConfigError
    from hybridcl.inference.load import load_run

    # The same rules as the eval.* keys, checked before the run is loaded.
    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--num-beams", args.num_beams)):
        if value is not None and value <= 0:
            raise ConfigError(f"{flag} = {value}: must be greater than 0")
    if args.temperature is not None and args.temperature <= 0:
        raise ConfigError(f"--temperature = {args.temperature}: must be greater than 0")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p = {args.top_p}: must be in (0, 1]")
    run = load_run(args.run, seed=args.seed)
    kwargs = {k: getattr(args, k) for k in _GENERATE_FLAGS if getattr(args, k) is not None}
    texts, tasks = run.generate(args.task, args.prompts, return_tasks=True, **kwargs)
    n = len(args.prompts)
    for k, (prompt, task, text) in enumerate(zip(args.prompts, tasks, texts, strict=True), start=1):
        if args.json:
            print(json.dumps({"prompt": prompt, "task": task, "output": text}))
            continue
        print(f"### prompt {k} of {n}: task {task}" + ("" if n == 1 else f" ({prompt[:60]!r})"))
        print(text if text.strip() else "(empty output)")
    return 0


def _serve(args) -> int:
    from hybridcl.inference.server import serve

    serve(
        Path(args.run_dir),
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        seed=args.seed,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        max_prompt_tokens=args.max_prompt_tokens,
        max_tokens=args.max_tokens,
        grace=args.grace,
    )
    return 0


def _export(args) -> int:
    from hybridcl.inference.export import export_merged, export_peft

    if args.merged:
        out = export_merged(args.run, args.task, Path(args.merged), seed=args.seed)
    else:
        out = export_peft(args.run, args.task, Path(args.peft), seed=args.seed)
    if args.push_to_hub:
        from hybridcl.inference.model_card import push_to_hub

        print(
            f"hybridcl: uploaded {out} to {push_to_hub(out, args.push_to_hub, private=args.private)}", file=sys.stderr
        )
    print(out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
