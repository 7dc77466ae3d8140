# Two entry points (README): `make demo` runs the main job, `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

$(BIN)/gptoss-edge: pyproject.toml
	@echo "== first run: creating $(VENV) and installing gptoss-edge with its test oracles"
	@echo "== (torch, transformers, onnxruntime, ...: a few minutes on a fresh machine; pip shows each step)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install --progress-bar on -e '.[test]'
	# OpenAI's reference implementation (an oracle): its metadata asks for Python >= 3.12 and
	# pulls GPU packages, but gpt_oss.torch runs on 3.10+ with what is installed above.
	$(BIN)/pip install -q --no-deps --ignore-requires-python gpt-oss==0.0.9
	touch $@

.PHONY: install test demo
install: $(BIN)/gptoss-edge

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python scripts/demo.py
