#!/bin/bash
# The sweeps that need a GPU, one command each on a lent GPU machine (see train/gpu_env.sh):
#   here, after any change:  make gpu-wheels gpu-data        # .whl/ and the datasets to carry
#   device run, carry [".whl", "data/minari/rate/popgym"]:  bash train/gpu_jobs.sh popgym
#   device run, carry [".whl", "data/shakespeare"]:        bash train/gpu_jobs.sh lm
#   here: make gpu-wheels gpu-wheels-vizdoom;  device run, carry [".whl", ".whl-vizdoom"]:
#                                                           bash train/gpu_jobs.sh vizdoom
#   (the ViZDoom dataset, 2.5 GB, is too large to carry: the script generates it there first,
#   about a minute, the same command as here; its evaluation steps 100 Doom processes per run
#   on the CPU cores, so fewer trainers run at once)
#   here: make gpu-wheels gpu-wheels-minigrid;  device run, carry [".whl", ".whl-minigrid"]:
#                                                           bash train/gpu_jobs.sh minigrid --only rate_mix
#   (the issue-24 mixture dataset is generated there first, as configs/minigrid/sweep.yaml says)
#   device run, carry [".whl"]:                             bash train/gpu_jobs.sh algorithmic --only sqeq
# Arguments after the job's name go to train.sweep (e.g. --only PREFIX).
# Runs the sweep's missing rows (configs/popgym/sweep.yaml: 120 runs, all in results/popgym.csv since 2026-12-07;
# configs/lm/sweep.yaml: the LM grid; configs/vizdoom/sweep.yaml: RATE, DT, BC-GRU, whose dt_5k rows need the
# 5000-episode dataset, which this job does not make: generate it first, as the sweep file's header says, or
# pass --only to leave them out) with JOBS trainers at once on the GPU, for at most SECONDS
# (default 540, inside the device tool's 10 minutes), then copies the results CSV to $OUT, also
# when the time limit stopped the sweep: copy it over the repository's and call again to go on
# (the sweep skips the rows its CSV holds).  DEVICE=cpu runs the same on the CPU (a rehearsal).
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)  # the time limit counts the wheels' install and a dataset's generation too
. train/gpu_env.sh
job=${1:-}
shift || true
seconds=${SECONDS_LIMIT:-540}
# dataset/generate: a dataset too large to carry, generated there first by the command that makes it here.
dataset=""; generate=()
case "$job" in
    popgym) sweep=configs/popgym/sweep.yaml; csv=results/popgym.csv; jobs=${JOBS:-12} ;;
    lm) sweep=configs/lm/sweep.yaml; csv=results/lm.csv; jobs=${JOBS:-8} ;;
    vizdoom) sweep=configs/vizdoom/sweep.yaml; csv=results/vizdoom.csv; jobs=${JOBS:-4}
        dataset=rate/vizdoom-two-colors/oracle-T90-P45-v0; generate=(python3 -m envs.vizdoom_data --no-progress) ;;
    minigrid) sweep=configs/minigrid/sweep.yaml; csv=results/minigrid.csv; jobs=${JOBS:-10}
        dataset=rate/minigrid-memory/oracle-S13-21-31-onehot-success-v0
        generate=(python3 -m envs.minigrid_data --sizes 13 21 31 --episodes 3000 --noise 0.1 --observation onehot
                  --reward success) ;;
    algorithmic) sweep=configs/algorithmic/sweep.yaml; csv=results/algorithmic.csv; jobs=${JOBS:-16} ;;
    *) echo "error: usage: bash train/gpu_jobs.sh lm|popgym|vizdoom|minigrid|algorithmic [train.sweep arguments]" >&2
       exit 2 ;;
esac
export MINARI_DATASETS_PATH="$PWD/data/minari"
left() { echo $((seconds - ($(date +%s) - started))); }
# (The writer moves a dataset into place only once it is complete: a timeout leaves none.)
if [ -n "$dataset" ] && [ ! -d "$MINARI_DATASETS_PATH/$dataset" ]; then
    timeout "$(left)" "${generate[@]}" || { echo "error: the dataset $dataset was not generated" >&2; exit 2; }
fi
if (( $(left) < 60 )); then
    echo "error: $(left) s left of ${seconds} s after the set-up: too little to train (raise SECONDS_LIMIT)" >&2; exit 2
fi
# A call that the time limit stops resumes its runs in flight at the next call on the same machine
# while it is still held (its runs/ folder is kept between calls) instead of starting them over:
# every trainer checkpoints at each evaluation, the RATE trainer's sweeps also every
# CHECKPOINT_EVERY steps.
resume=()
case "$job" in popgym|vizdoom|minigrid) resume=(--set "checkpoint_every=${CHECKPOINT_EVERY:-100}") ;; esac
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
PYTHONUNBUFFERED=1 timeout "$(left)" python3 -m train.sweep "$sweep" --jobs "$jobs" \
    --set "train.device=${DEVICE:-cuda}" --set train.threads=1 ${resume[@]+"${resume[@]}"} "$@"
status=$?
out=${OUT:-results/gpu_out}
mkdir -p "$out"
if [ -f "$csv" ]; then cp "$csv" "$out/"; echo "sweep exit status $status; $csv copied to $out/"
else echo "sweep exit status $status; no run finished, so there is no $csv"; fi
exit $status
