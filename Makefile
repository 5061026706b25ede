.PHONY: install demo test

install:
	./scripts/install

# The main job on the embedded default: SmolLM2-135M-Instruct, bundled corpus, Python -> JavaScript,
# per-task parts (hybrid_task_specific) beside a shared layer (hybrid_shared_layer), then their comparison.
demo: install
	.venv/bin/hybridcl run preset=default --sweep strategy=hybrid_task_specific,hybrid_shared_layer

test: install
	.venv/bin/python -m pytest
