#!/usr/bin/env bash
# Start `python -m distil.train` under torchrun: NPROC processes on this node, NNODES nodes in all.
#   one node:   scripts/torchrun.sh trainer=ddp experiment=distilbert
#   two nodes:  on each node, with the same DISTIL_RUN_DIR on a shared filesystem:
#     NNODES=2 NODE_RANK=<0 or 1> MASTER_ADDR=<host of node 0> DISTIL_RUN_DIR=/shared/distil/runs/paper-2x8 \
#       scripts/torchrun.sh trainer=ddp_multinode experiment=distilbert trainer.accumulate_grad_batches=8
# Every process composes the config itself; DISTIL_RUN_DIR (read by conf/hydra/default.yaml) makes all of them write
# to one run directory. On one node it defaults to outputs/runs/<date_time>, taken once here for all processes.
# Global batch = data.batch_size x NPROC x NNODES x trainer.accumulate_grad_batches (see conf/trainer/ddp.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

NNODES=${NNODES:-1}                                       # nodes in the job
NPROC=${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l)}      # processes on this node: one per GPU
NODE_RANK=${NODE_RANK:-0}                                 # this node's index, 0 .. NNODES-1
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}                     # host of node 0 (rendezvous)
MASTER_PORT=${MASTER_PORT:-29500}                         # free TCP port on node 0
PYTHON=${PYTHON:-python}                                  # interpreter of the environment with distil installed

if (( NPROC < 1 )); then
  echo "no GPU found: set NPROC (and pass trainer=ddp_cpu to train on the CPU)" >&2
  exit 2
fi
if [[ -z "${DISTIL_RUN_DIR:-}" ]]; then
  if (( NNODES > 1 )); then
    echo "set DISTIL_RUN_DIR to the same shared path on every node, so all processes use one run directory" >&2
    exit 2
  fi
  DISTIL_RUN_DIR="$PWD/outputs/runs/$(date +%Y-%m-%d_%H-%M-%S)"
fi
export DISTIL_RUN_DIR

exec "$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" --nproc-per-node="$NPROC" --node-rank="$NODE_RANK" \
  --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" \
  -m distil.train trainer.num_nodes="$NNODES" trainer.devices="$NPROC" "$@"
