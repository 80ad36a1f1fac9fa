# Everything runs in a project-local virtual environment, made on first use.
# Another Python gets its own environment, e.g.
#   make test PYTHON=$(pyenv root)/versions/3.13.0/bin/python VENV=.venv313
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# mypy checks the plugin, its installed tools and the support code beside it (the folders that exist).
MYPY_PATHS := $(wildcard ec2 cloudify_aws_ec2_tools tools bench)
# `make wagon` writes the wagon and wagon validate's report here;
# tests/test_wagon.py inspects both and builds nothing itself.
WAGON_REPORT := dist/wagon-validate.txt
WAGON_SOURCES := setup.py MANIFEST.in plugin.yaml $(wildcard ec2/*.py cloudify_aws_ec2_tools/*.py offline/*.yaml)
# `make test` runs the suite in this many pytest-xdist workers, each with its own
# emulator (0: all in one process, in file order).
TEST_WORKERS ?= 4
# make demo TARGET=aws INPUTS=examples/inputs-aws.yaml runs on real AWS (costs money).
TARGET ?= emulator
INPUTS ?=

.PHONY: test test-manager lint demo wagon bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.py dev-requirements.txt
	$(PIP) install --upgrade pip
	$(PIP) install -e . -r dev-requirements.txt
	touch $(STAMP)

# The demo adds the Cloudify CLI, resolved together with the test requirements.
$(DEMO_STAMP): $(STAMP) demo-requirements.txt
	$(PIP) install -e . -r dev-requirements.txt -r demo-requirements.txt
	touch $(DEMO_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(MYPY_PATHS)

# The tests need the Cloudify CLI (the cfy tests) and the wagon (its own tests and
# manager mode) too, so that a fresh clone skips nothing; under CI=true a skip fails.
test: $(DEMO_STAMP) $(WAGON_REPORT) lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests

# Only the manager-mode tests (each operation in a new process of the plugin venv made
# from the wagon, as a manager runs it); `make test` runs them too once a wagon is built.
test-manager: $(WAGON_REPORT)
	$(BIN)/python -m pytest -q -m manager_mode tests

demo: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py --target $(TARGET) $(if $(INPUTS),--inputs $(INPUTS))

# A wagon with plugin.yaml inside, and a copy of plugin.yaml beside it, in dist/,
# checked by wagon validate. Rebuilt only when the plugin's sources changed.
# The tools' output goes to dist/wagon-*.txt, and is shown when they fail.
wagon: $(WAGON_REPORT)

$(WAGON_REPORT): $(STAMP) $(WAGON_SOURCES)
	rm -rf build/lib build/bdist.* dist/*.wgn dist/plugin.yaml dist/wagon-*.txt*
	mkdir -p dist
	$(BIN)/wagon create . -o dist -f --add-file plugin.yaml > dist/wagon-create.txt 2>&1 \
	  || { cat dist/wagon-create.txt; exit 1; }
	$(BIN)/wagon validate dist/*.wgn > $(WAGON_REPORT).tmp 2>&1 || { cat $(WAGON_REPORT).tmp; exit 1; }
	cp plugin.yaml dist/plugin.yaml
	mv $(WAGON_REPORT).tmp $(WAGON_REPORT)
	@echo "wagon: $$(ls dist/*.wgn) built and validated"

# Removes every environment made here (.venv, and .venv313 and the like for other Pythons).
clean:
	rm -rf .venv .venv[0-9]* $(VENV) build dist *.egg-info .mypy_cache

# make bench BENCH_ARGS=--quick for a short run; figures in build/bench/. The wagon
# is for the manager section (operations in processes of the plugin venv made from it).
bench: $(STAMP) bench/requirements.txt $(WAGON_REPORT)
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench.run $(BENCH_ARGS)
