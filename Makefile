# Two entry points for a fresh machine:
#   make run   - creates .venv if missing, then runs the main job on built-in defaults
#   make test  - creates .venv if missing, then runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench sweep report gpu-wheels gpu-wheels-vizdoom gpu-wheels-minigrid gpu-data lock clean-venv

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: the project needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1):" \
			"run make PYTHON=python3.11 ..."; \
		exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build on disk, never an unpinned CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	# The pinned set and the package through pyproject (its dependencies and extras are resolved,
	# so pyproject's lists are exercised; editable: the repository is the installed source), at the
	# exact versions of constraints.txt (what the suite last passed with; `make lock` rewrites it).
	$(PY) -m pip install --quiet -c constraints.txt -r requirements.txt \
		-e ".[export,dev,video,minigrid,popgym,mujoco,memory-maze,vizdoom]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m train.tmaze_quick

test: $(STAMP)
	# Lint first (pyproject's [tool.ruff.lint]: a second of work), then the suite.
	$(PY) -m ruff check --quiet .
	# Two workers (each test runs on one torch thread), a test file per worker at a time: the module
	# fixtures (exported artifacts, datasets) are built once.
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

bench: $(STAMP)
	$(PY) -m eval.bench.throughput --out results/bench_rmt.md

sweep: $(STAMP)
	$(PY) -m train.sweep configs/algorithmic/sweep.yaml

report: $(STAMP)
	$(PY) -m eval.reports.algorithmic

# What a lent GPU machine lacks (its image has torch, numpy, tqdm, yaml, h5py, onnx; Python 3.12;
# no registry), carried there for eval/bench/gpu.sh and train/gpu_jobs.sh: pure-Python wheels (any
# platform takes them) and this project's own wheel (rate_envs and its Gymnasium entry point).
gpu-wheels: $(STAMP)
	rm -rf .whl
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
		gymnasium==1.4.0 farama-notifications==0.0.6 minari==0.5.4 popgym==1.0.7
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w .whl .

# ViZDoom's engine for the ViZDoom sweep (train/gpu_jobs.sh vizdoom), a 39 MB binary wheel for the
# image's Python 3.12, kept apart from .whl/ so that the other jobs' carries stay small.  Its
# dependencies (numpy, gymnasium) come from the image and .whl/; pygame-ce is only for vizdoom's
# own Gymnasium wrapper, which rate_envs does not use.
gpu-wheels-vizdoom: $(STAMP)
	rm -rf .whl-vizdoom
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--platform manylinux_2_28_x86_64 -d .whl-vizdoom vizdoom==1.3.2

# MiniGrid for the MiniGrid sweep (train/gpu_jobs.sh minigrid): minigrid imports pygame-ce (a
# binary wheel) at import time; apart from .whl/ for the same reason as ViZDoom's.
gpu-wheels-minigrid: $(STAMP)
	rm -rf .whl-minigrid
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl-minigrid minigrid==3.2.0 pygame-ce==2.5.8

# The datasets those sweeps read: the two POPGym Medium tasks and the LM corpus.
gpu-data: $(STAMP)
	# (a dataset already there is kept: generated again, it would be the same one)
	for t in RepeatFirstMedium PositionOnlyCartPoleMedium; do \
		MINARI_DATASETS_PATH=data/minari $(PY) -c "import sys, minari; from envs.popgym_data import default_dataset_id; \
			sys.exit(3 if default_dataset_id('$$t') in minari.list_local_datasets() else 0)"; status=$$?; \
		[ $$status = 3 ] && continue; [ $$status = 0 ] || exit 1; \
		MINARI_DATASETS_PATH=data/minari $(PY) -m envs.popgym_data --task $$t --episodes 1000 --noise 0.1 || exit 1; done
	$(PY) -m train.prepare_lm

# constraints.txt from the installed .venv: every package's exact version but torch (pinned in
# requirements.txt; its local build tag, +cpu here, differs between machines) and this package.
# pip refuses a constraint that is not name==version (a package installed from a path or URL).
lock:
	@test -x $(PY) || { echo "error: no $(VENV) to lock: run make test first"; exit 1; }
	$(PY) -m pip freeze --exclude-editable > constraints.txt.tmp
	@if grep -v '==' constraints.txt.tmp; then \
		echo "error: the packages above are not pinned by version; install them from an index first"; \
		rm -f constraints.txt.tmp; exit 1; fi
	{ echo "# Exact versions the test suite passed with (Python 3.11, Linux x86_64), written by \`make lock\`;"; \
	  echo "# make installs within them. torch is pinned in requirements.txt."; \
	  grep -iv '^torch==' constraints.txt.tmp; } > constraints.txt.new
	rm -f constraints.txt.tmp
	mv constraints.txt.new constraints.txt

clean-venv:
	rm -rf $(VENV)
