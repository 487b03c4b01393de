#!/usr/bin/env bash
# proctor train as a Ray job on a running cluster. The checkout ships as the job's working directory
# (your own configs and problem files travel with it); the nodes run the proctor installed there.
#   RAY_ADDRESS=http://HEAD:8265 bash examples/ray_job.sh --config tiny --out runs/job [key=value ...]
# RAY_ADDRESS is the head's dashboard (job API) address; the default is a head on this machine. The
# job waits and streams its log; `ray job stop ID` sends SIGTERM, and the run saves what it finished.
# On nodes that share no disk, add run.storage=s3://BUCKET/PREFIX (or a shared mount): docs/cluster.md.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
exec ray job submit --address "${RAY_ADDRESS:-http://127.0.0.1:8265}" --working-dir "$here" -- proctor train "$@"
