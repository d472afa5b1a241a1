# Two entry points for a fresh machine:
#   make run   - creates .venv if missing, then runs the main job on built-in defaults
#   make test  - creates .venv if missing, then runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench sweep report clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build on disk, never an unpinned CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	# The pinned set and the package through pyproject (its dependencies and extras are resolved,
	# so pyproject's lists are exercised; editable: the repository is the installed source).
	$(PY) -m pip install --quiet -r requirements.txt -e ".[export,dev,video]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m train.tmaze_quick

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m eval.bench.throughput

sweep: $(STAMP)
	$(PY) -m train.sweep configs/algorithmic/sweep.yaml

report: $(STAMP)
	$(PY) -m eval.reports.algorithmic

clean-venv:
	rm -rf $(VENV)
