#!/usr/bin/env bash
# Train on a GKE TPU cluster with xpk (github.com/google/xpk): one workload, every host runs `stvl train`.
# Build an image that contains this repository installed (pip install -e ".[test]" plus jax[tpu]) and push it.
#
#   CLUSTER=my-cluster IMAGE=us-docker.pkg.dev/proj/repo/stvl-jax:latest TPU_TYPE=v5p-128 \
#       launch/xpk_example.sh configs/train/qwen3vl_2b_mfu.yaml checkpoint.dir=gs://my-bucket/runs/2b/checkpoints
#
# NUM_SLICES (default 1) > 1 runs multi-slice over DCN: put `data` on the slice axis, e.g. mesh.data=NUM_SLICES.
set -euo pipefail
: "${CLUSTER:?set CLUSTER}" "${IMAGE:?set IMAGE}" "${TPU_TYPE:?set TPU_TYPE, e.g. v5p-128}"
if [ $# -lt 1 ]; then sed -n '2,9p' "$0" >&2; exit 2; fi
ARGS=""
for a in "$@"; do ARGS+=" $(printf '%q' "$a")"; done
WORKLOAD="${WORKLOAD:-stvl-$(date +%m%d-%H%M%S)}"

xpk workload create \
  --cluster "$CLUSTER" \
  --workload "$WORKLOAD" \
  --docker-image "$IMAGE" \
  --tpu-type "$TPU_TYPE" \
  --num-slices "${NUM_SLICES:-1}" \
  --command "python -m stvl_jax.cli train$ARGS distributed.mode=tpu checkpoint.resume=auto"
echo "submitted $WORKLOAD; follow with: xpk workload list --cluster $CLUSTER"
