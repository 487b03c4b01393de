#!/usr/bin/env bash
# The GPU checks in one command, from the project root on a CUDA machine:
#   bash tests/gpu/run.sh [OUT_DIR]
# tests/gpu, then `bench weight-sync --device cuda` and `bench learner --device cuda` on random-init
# networks of SmolLM2-135M's and Qwen2.5-1.5B's shapes. Needs torch, transformers, numpy and pytest;
# wheels in .whl/ (deepspeed, pydantic, ...: see README "GPU path") are installed into /tmp/site
# first. Each stage runs under its own time limit; its log lands in OUT_DIR.
set -u
out=${1:-${OUT:-/tmp/proctor-gpu}}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
# proctor is not installed there: the `proctor` namespace is made of links to this tree's directories
# (the mapping of pyproject.toml), so the code that runs is the working tree's.
ns=$(mktemp -d) && python3 scripts/link_namespace.py "$ns"
export PYTHONPATH=$ns${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
export PROCTOR_CACHE=${PROCTOR_CACHE:-/tmp/proctor-cache} HF_HUB_OFFLINE=1
nvidia-smi -L | tee "$out/card.txt"
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)" | tee -a "$out/card.txt"

stage() {  # NAME LIMIT_S COMMAND...: run it, keep its log (a bench's last line: its JSON object)
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc in $((SECONDS - t0)) s"
  tail -n 3 "$out/$name.log" | cut -c1-1500
}
stage tests 180 python3 -m pytest -m gpu tests/gpu -p no:cacheprovider -rA -q
stage weight-sync-1.5b 80 python3 -m proctor.bench.weight_sync --device cuda --shape qwen2.5-1.5b --repeats 5
stage learner-135m 80 python3 -m proctor.bench.learner --device cuda --shape smollm2-135m --episodes 32 --iterations 3 \
  --layouts gae:bfloat16:0x1,grpo:bfloat16:0x1 learner.micro_batch_tokens=16384
stage learner-1.5b 150 python3 -m proctor.bench.learner --device cuda --shape qwen2.5-1.5b --episodes 32 --iterations 3 \
  --layouts gae:bfloat16:0x1,grpo:bfloat16:0x1 learner.micro_batch_tokens=16384
stage learner-1.5b-4096 100 python3 -m proctor.bench.learner --device cuda --shape qwen2.5-1.5b --episodes 32 --iterations 3 \
  --layouts gae:bfloat16:0x1 learner.micro_batch_tokens=4096
