#!/bin/bash
# Stream throughput and the gateway's CPU per check without a candidate register and with one
# sampled at 1%, alternating, a fresh `cccgate serve` per run (benches/README.md, "Shadow
# evaluation and the regulator's report"). Loopback only; ROUNDS rounds of two 15 s runs.
#
#   BIN=target/release/cccgate ROUNDS=5 DIR=/tmp/shadow-cost benches/shadow_cost.sh
set -euo pipefail
export DIR=${DIR:-/tmp/shadow-cost} MODE=stream
A_LABEL=without B_LABEL=sample1 A_FLAGS="" B_FLAGS="--candidate-dir cands --shadow-sample 0.01" \
  exec "$(dirname "$0")/serve_ab.sh"
