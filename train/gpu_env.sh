# Sourced by the GPU scripts (eval/bench/gpu.sh, train/gpu_jobs.sh) on a lent GPU machine, whose
# python3 holds torch with CUDA but nothing can be fetched: installs the wheels carried in .whl/
# (`make gpu-wheels`: gymnasium, minari, popgym and this project, whose wheel brings rate_envs and
# its Gymnasium entry point) into /tmp/site, and puts the repository first on the path.
# (`make gpu-wheels-vizdoom`: .whl-vizdoom/ with ViZDoom's engine, for the ViZDoom sweep.)
if compgen -G ".whl*/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl*/*.whl \
        || { echo "error: the carried wheels in .whl*/ did not install" >&2; exit 2; }
fi
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
