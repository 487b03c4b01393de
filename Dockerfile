# One image for the Ray head, the workers and `proctor train` (see docker-compose.yml).
# CPU by default. GPU variant (not built or run here: no GPU on the development machine):
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 --build-arg PROCTOR_EXTRA=gpu -t proctor:gpu .
# and give the services `gpus: all` (or deploy.resources.reservations.devices) in docker-compose.yml.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG PROCTOR_EXTRA=cpu
ENV DEBIAN_FRONTEND=noninteractive PROCTOR_EXTRA=${PROCTOR_EXTRA} RAY_USAGE_STATS_ENABLED=0 \
    PROCTOR_CACHE=/var/cache/proctor PROCTOR_IN_IMAGE=1
RUN apt-get update -q && apt-get install -y -q --no-install-recommends bubblewrap build-essential make git \
        python3 python3-venv && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/proctor
COPY pyproject.toml README.md Makefile ./
COPY scripts scripts
COPY cluster cluster
COPY rollout rollout
COPY learner learner
COPY reward reward
COPY sandbox_pool sandbox_pool
COPY problems problems
COPY studies studies
COPY bench bench
COPY configs configs
RUN bash scripts/setup.sh && .venv/bin/proctor model prepare
ENV PATH=/opt/proctor/.venv/bin:${PATH}
CMD ["proctor", "--help"]
