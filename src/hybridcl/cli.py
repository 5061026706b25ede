"""The ``hybridcl`` command line.

    hybridcl run [preset=NAME] [key=value ...]      train and evaluate a task sequence
    hybridcl run --resume RUN_DIR                   continue an interrupted run
    hybridcl params [preset=NAME] [key=value ...]   the architecture and parameter table
    hybridcl data extract|build|stats ...           build record files and the bundled corpus
    hybridcl setup                                  put the embedded model in place (offline)

Errors a user can fix print one line and exit with code 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hybridcl.errors import HybridclError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hybridcl", description="Continual learning of code models with hybrid PEFT components.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate a task sequence", description="Overrides: preset=NAME config=FILE key.sub=value ...")
    run.add_argument("overrides", nargs="*", help="preset=NAME, config=FILE.yaml, or key=value (e.g. train.epochs=1)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved config")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.set_defaults(func=_run)

    params = sub.add_parser("params", help="print the architecture and parameter table")
    params.add_argument("overrides", nargs="*", help="preset=NAME or key=value")
    params.set_defaults(func=_params)

    setup = sub.add_parser("setup", help="convert the embedded model to a safetensors folder (once, offline)")
    setup.set_defaults(func=_setup)

    from hybridcl.data.cli import add_commands

    add_commands(sub)

    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except HybridclError as exc:
        if args.debug:
            raise
        print(f"hybridcl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hybridcl: interrupted; finished tasks are saved: continue with `hybridcl run --resume RUN_DIR`", file=sys.stderr)
        return 130
    return result or 0


def _run(args) -> int:
    from hybridcl.config import load_config
    from hybridcl.continual import load_run_config, new_run_dir, run_experiment
    from hybridcl.errors import RunError

    if args.resume:
        if args.overrides:
            raise RunError("--resume takes no overrides: a resumed run keeps the config it was started with")
        run_dir = Path(args.resume)
        config = load_run_config(run_dir)
    else:
        config = load_config(overrides=args.overrides)
        run_dir = new_run_dir(config)
    print(f"hybridcl: run folder {run_dir}", file=sys.stderr)
    run_dir = run_experiment(config, run_dir, progress=not args.no_progress)
    print(run_dir)
    return 0


def _params(args) -> int:
    from hybridcl.config import load_config
    from hybridcl.params import params_table

    print(params_table(load_config(overrides=args.overrides)))
    return 0


def _setup(args) -> int:
    from hybridcl.model.loading import EMBEDDED, embedded_folder

    for key in EMBEDDED:
        print(f"embedded:{key} -> {embedded_folder(key)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
