#!/bin/bash
# Stream throughput and the gateway's CPU per check without a candidate register and with one
# sampled at 1%, alternating, a fresh `cccgate serve` per run (benches/README.md, "Shadow
# evaluation and the regulator's report"). Loopback only; ROUNDS rounds of two 15 s runs.
#
#   BIN=target/release/cccgate ROUNDS=5 DIR=/tmp/shadow-cost benches/shadow_cost.sh
set -euo pipefail
BIN=$(realpath "${BIN:-target/release/cccgate}")
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-15}
DIR=${DIR:-/tmp/shadow-cost}
mkdir -p "$DIR" && cd "$DIR"
if [ ! -f cands/snap-2.ccc ]; then
  rm -rf drops snaps cands && mkdir cands
  "$BIN" synth feed --out drops/1 --certs 200000 >/dev/null
  "$BIN" load build --drop drops/1 --out snaps >/dev/null
  "$BIN" synth feed --out drops/2 --delta-of snaps/snap-1.ccc --changes 5000 >/dev/null
  "$BIN" load build --drop drops/2 --out snaps >/dev/null
  mv snaps/snap-2.ccc cands/
fi
hz=$(getconf CLK_TCK)
run() { # $1 label, then extra serve flags
  local label=$1; shift
  "$BIN" serve --snapshot-dir snaps --listen 127.0.0.1:50161 --admin-listen 127.0.0.1:50162 \
    --metrics-listen 127.0.0.1:50163 "$@" > "serve-$label.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:50163/readyz >/dev/null && break; sleep 0.1; done
  sleep 1
  local t0 t1 out cps
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$("$BIN" bench grpc --target http://127.0.0.1:50161 --certs 200000 --mode stream \
    --seconds "$SECS" --progress off 2>&1)
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  local shadow
  shadow=$(curl -s http://127.0.0.1:50163/metrics | grep -E '^cccgate_shadow_(checks|dropped)_total' | tr '\n' ' ' || true)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  cps=$(echo "$out" | grep -oE '[0-9,]+ checks/s' | head -1 | tr -d ',' | cut -d' ' -f1)
  awk -v l="$label" -v c="$cps" -v t=$((t1 - t0)) -v hz="$hz" -v s="$SECS" -v sh="$shadow" \
    -v load="$(cut -d' ' -f1-3 /proc/loadavg)" \
    'BEGIN { printf "%-8s %10d checks/s  %.3f us CPU a check  %s load %s\n", l, c, t / hz * 1e6 / (c * s), sh, load }'
}
for _ in $(seq "$ROUNDS"); do
  run without
  run sample1 --candidate-dir cands --shadow-sample 0.01
done
