# Two commands on a fresh machine: `make demo` runs the main job, `make test` passes the tests.
# Each creates .venv and installs the project (editable) with what it needs.
# `make test-lowest` installs every direct dependency at its declared floor (constraints/lowest.txt)
# into .venv-lowest and runs the protocol and encode-input tests there.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOWEST_VENV := .venv-lowest
LOWEST_STAMP := $(LOWEST_VENV)/.installed

.PHONY: demo test test-lowest install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m privfreq.pipelines.demo --output out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

$(LOWEST_STAMP): pyproject.toml constraints/lowest.txt
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install --quiet --upgrade pip
	$(LOWEST_VENV)/bin/pip install --quiet -c constraints/lowest.txt -e '.[test]'
	touch $(LOWEST_STAMP)

test-lowest: $(LOWEST_STAMP)
	$(LOWEST_VENV)/bin/python constraints/check_floors.py
	$(LOWEST_VENV)/bin/python -c "import apache_beam, fastavro, matplotlib.pyplot, pyarrow.csv, \
	pyarrow.parquet, scipy.linalg, scipy.sparse.linalg, scipy.stats"
	$(LOWEST_VENV)/bin/python -m pytest -q tests/protocols \
	tests/pipelines/test_encode_input.py

clean:
	rm -rf $(VENV) $(LOWEST_VENV) out
