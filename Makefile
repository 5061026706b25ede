.PHONY: install demo lint test test-fast

install:
	./scripts/install

# The main job on the embedded default: SmolLM2-135M-Instruct, bundled corpus, Python -> JavaScript,
# per-task parts (hybrid_task_specific) beside a shared layer (hybrid_shared_layer), then their comparison.
demo: install
	.venv/bin/hybridcl run preset=default --sweep strategy=hybrid_task_specific,hybrid_shared_layer

# The gates CI runs before the tests: format, lint (ruff, configured in pyproject.toml) and the type check of src/.
lint:
	.venv/bin/ruff format --check src tests scripts benchmarks
	.venv/bin/ruff check src tests scripts benchmarks
	.venv/bin/mypy

test: install lint
	.venv/bin/python -m pytest -n 2 --dist loadfile

# The fast set (tests not marked slow): under a minute on a developer's machine.
test-fast: lint
	.venv/bin/python -m pytest -n 2 -m "not slow"
