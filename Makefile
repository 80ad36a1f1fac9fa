# Everything runs in a project-local virtual environment, made on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# make demo TARGET=aws INPUTS=examples/inputs-aws.yaml runs on real AWS (costs money).
TARGET ?= emulator
INPUTS ?=

.PHONY: test lint demo wagon bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.py dev-requirements.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . -r dev-requirements.txt
	touch $(STAMP)

# The demo adds the Cloudify CLI, resolved together with the test requirements.
$(DEMO_STAMP): $(STAMP) demo-requirements.txt
	$(BIN)/python -m pip install --quiet -e . -r dev-requirements.txt -r demo-requirements.txt
	touch $(DEMO_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q tests

demo: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py --target $(TARGET) $(if $(INPUTS),--inputs $(INPUTS))

# A wagon with plugin.yaml inside, and a copy of plugin.yaml beside it, in dist/.
wagon: $(STAMP)
	rm -rf build/lib build/bdist.* dist/*.wgn dist/plugin.yaml
	$(BIN)/wagon create . -o dist -f --add-file plugin.yaml
	$(BIN)/wagon validate dist/*.wgn
	cp plugin.yaml dist/plugin.yaml

clean:
	rm -rf $(VENV) build dist *.egg-info

# make bench BENCH_ARGS=--quick for a short run; figures in build/bench/.
bench: $(STAMP) bench/requirements.txt
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench.run $(BENCH_ARGS)
