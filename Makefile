VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: install test test-slow lint wheel-check format clean docs docs-serve

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel lies on disk here; an unpinned `torch` pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev,sweep,slurm,wandb,mlflow,ray,docs]'
	touch $@

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(PY) -m ruff check peft_glue tests benchmarks
	$(PY) -m ruff format --check peft_glue tests benchmarks

# the wheel, installed non-editable into a fresh venv (reusing .venv's packages), run from outside the repo
wheel-check: install
	.ci/wheel-check $(VENV)

# the docs site, from docs/ (mkdocs.yml); --strict: a broken link or a page missing from the nav fails it.
# The configuration and command-line references are made from the code at build time (docs/hooks.py).
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

format: install
	$(PY) -m ruff format peft_glue tests benchmarks
	$(PY) -m ruff check --fix peft_glue tests benchmarks

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache site
