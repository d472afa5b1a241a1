# Two entry points for a fresh machine:
#   make run   - creates .venv if missing, then runs the main job on built-in defaults
#   make test  - creates .venv if missing, then runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench sweep report gpu-wheels clean-venv

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

# Wheels a lent GPU machine lacks (its image has torch, numpy, tqdm, yaml; Python 3.12), carried
# there as .whl/ for eval/bench/gpu.sh: pure-Python, so any platform takes them.
gpu-wheels: $(STAMP)
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
		gymnasium==1.4.0 farama-notifications==0.0.6

clean-venv:
	rm -rf $(VENV)
