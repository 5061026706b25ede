.PHONY: install demo test

install:
	./scripts/install

# The main job on the embedded default: SmolLM2-135M-Instruct, bundled corpus, Python -> JavaScript.
demo: install
	.venv/bin/hybridcl run preset=default

test: install
	.venv/bin/python -m pytest
