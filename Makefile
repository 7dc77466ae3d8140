# Two entry points (README): `make demo` runs the main job, `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

$(BIN)/gptoss-edge: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

.PHONY: install test demo
install: $(BIN)/gptoss-edge

test: install
	$(BIN)/python -m pytest -q

demo: install
	bash scripts/demo.sh $(BIN)
