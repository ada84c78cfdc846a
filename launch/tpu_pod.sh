#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: run the same `stvl train` on every worker with gcloud (--worker=all).
# Each worker is one JAX process; `distributed.mode=tpu` makes jax.distributed find the others.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a launch/tpu_pod.sh CONFIG [key=value ...]
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a SETUP=1 launch/tpu_pod.sh configs/train/qwen3vl_2b_mfu.yaml \
#       checkpoint.dir=gs://my-bucket/runs/2b/checkpoints
#
# Environment:
#   TPU_NAME, ZONE   the TPU VM slice (required); PROJECT optional (gcloud's default otherwise)
#   REPO_DIR         checkout on the workers (default ~/stvl-jax; SETUP=1 clones/updates and installs it)
#   REPO_URL         git URL for SETUP=1
#   SETUP=1          install first: pip install -e ".[test]" and jax[tpu] on every worker
# Checkpoints should go to GCS (checkpoint.dir=gs://...): every worker writes its shards there. out_dir
# (metrics, TensorBoard, loss curve) is written by worker 0 on its local disk. The job resumes automatically
# after a preemption (checkpoint.resume=auto): rerun the same command.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
if [ $# -lt 1 ]; then sed -n '2,18p' "$0" >&2; exit 2; fi
REPO_DIR="${REPO_DIR:-\$HOME/stvl-jax}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}

ARGS=""
for a in "$@"; do ARGS+=" $(printf '%q' "$a")"; done

SETUP_CMD=""
if [ "${SETUP:-0}" = "1" ]; then
  : "${REPO_URL:?SETUP=1 needs REPO_URL}"
  SETUP_CMD="(test -d $REPO_DIR || git clone $REPO_URL $REPO_DIR) && cd $REPO_DIR && git pull --ff-only && \
pip install -q -U 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html && \
pip install -q -e '.[test]' && "
fi

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all --command \
  "${SETUP_CMD}cd $REPO_DIR && python -m stvl_jax.cli train$ARGS distributed.mode=tpu checkpoint.resume=auto"
