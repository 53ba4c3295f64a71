#!/bin/bash
# Two settings of `cccgate serve` against each other: throughput and the gateway's CPU per
# check of `bench grpc --target`, alternating A and B, a fresh gateway per run, ROUNDS rounds
# of two SECS-second runs over a register of 200,000 certificates (plus a 5,000-change delta
# kept as a candidate, for the shadow A/B). Loopback only.
#
#   A_FLAGS="" B_FLAGS="--turn-listings 1000" MODE=stream ROUNDS=5 benches/serve_ab.sh
#
# A_LABEL/B_LABEL name the two; MODE is bench grpc's --mode (stream, batch, unary).
set -euo pipefail
BIN=$(realpath "${BIN:-target/release/cccgate}")
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-15}
MODE=${MODE:-stream}
DIR=${DIR:-/tmp/serve-ab}
A_LABEL=${A_LABEL:-A}
B_LABEL=${B_LABEL:-B}
read -r -a A_ARGS <<< "${A_FLAGS:-}"
read -r -a B_ARGS <<< "${B_FLAGS:-}"
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
  local t0 t1 out cps p99
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$("$BIN" bench grpc --target http://127.0.0.1:50161 --certs 200000 --mode "$MODE" \
    --seconds "$SECS" --progress off 2>&1)
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  local shadow
  shadow=$(curl -s http://127.0.0.1:50163/metrics | grep -E '^cccgate_shadow_(checks|dropped)_total' | tr '\n' ' ' || true)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  cps=$(echo "$out" | grep -oE 'checks_per_sec=[0-9]+' | tail -1 | cut -d= -f2)
  p99=$(echo "$out" | grep -oE 'p99_us=[0-9]+' | tail -1 | cut -d= -f2)
  awk -v l="$label" -v c="$cps" -v p="$p99" -v t=$((t1 - t0)) -v hz="$hz" -v s="$SECS" -v sh="$shadow" \
    -v load="$(cut -d' ' -f1-3 /proc/loadavg)" \
    'BEGIN { printf "%-10s %10d checks/s  p99 %6d us  %.3f us CPU a check  %s load %s\n", l, c, p, t / hz * 1e6 / (c * s), sh, load }'
}
for _ in $(seq "$ROUNDS"); do
  run "$A_LABEL" "${A_ARGS[@]}"
  run "$B_LABEL" "${B_ARGS[@]}"
done
