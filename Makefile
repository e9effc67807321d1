# Two commands on a fresh clone: `make run` (quick start) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: help run test test-fast lint docs image clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=constraints.txt $(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

run: $(STAMP)  ## offline quick start: ResNet-18 on scikit-learn's digits (CPU, ~2 min)
	$(PY) -m mmclf experiment=quickstart

test: $(STAMP)  ## the whole test suite (CPU, a few minutes; two pytest workers, a file's tests on one)
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: $(STAMP)  ## the tests not marked slow
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)  ## ruff, then the import contracts (pyproject.toml's [tool.importlinter])
	$(PY) -m ruff check mmclf backends tests benchmarks
	$(VENV)/bin/lint-imports

docs: $(STAMP)  ## the docs site into site/ (MkDocs Material; strict: a broken link or page fails)
	$(VENV)/bin/mkdocs build --strict

image:  ## build the image every Kubeflow pod runs (needs a Docker engine)
	docker build -f docker/Dockerfile -t $${IMAGE:-mmclf:latest} .

clean:  ## remove the virtual environment and outputs (keeps data/)
	rm -rf $(VENV) outputs multirun build site *.egg-info
