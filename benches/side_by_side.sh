#!/usr/bin/env bash
# Side-by-side benchmarks of issue #12, in one run, on loopback only:
#
#   * Redis GET (what a marketplace would otherwise use: a cache of certificate rows), pipelined
#     (-P 16, 50 clients) and not (50 clients), with Debian's redis-server and redis-benchmark;
#   * cccgate's own load generator: `bench grpc --mode stream|batch|unary` (embedded gateway,
#     every verdict checked against the generator's); unary again open loop at half the
#     unpipelined Redis rate (the latency goal) and at half cccgate's own unary rate;
#   * the gateway alone (`cccgate serve`) under an independent client, h2load: CheckBatch of
#     1,000 listings, and unary Check from 50 connections x 1 in flight and from 1 connection x
#     16 in flight; the gateway's own CPU time per check and per unary call (and
#     redis-server's per GET) is read from /proc;
#   * the engine in-process: `bench engine --batch 1000` (and the cost of one uncached memory
#     access, measured in the same run);
#
# then prints the ratios the issue's goals are written in. Needs redis-server, redis-benchmark
# (apt-get install redis-server) and h2load (apt-get install nghttp2-client), python3, and a
# release build (cargo build --release -p cccgate). Big files go under $WORK (deleted at the end).
#
#   benches/side_by_side.sh                 # all of it (~3-4 minutes on a quiet machine)
#   SECS=5 benches/side_by_side.sh          # shorter runs
#   BIN=/tmp/other/cccgate benches/side_by_side.sh
#   FLOOR=target/release/examples/h2_unary_floor benches/side_by_side.sh
#       # also the HTTP/2 stack alone (hyper/h2, a fixed answer, no gateway) under the same h2load
#       # unary runs: the floor any server on that stack starts from
#       # (cargo build --release -p cccgate-server --example h2_unary_floor)
set -euo pipefail

BIN=${BIN:-target/release/cccgate}
SECS=${SECS:-10}
WORK=${WORK:-/tmp/cccgate-side-by-side}
CACHE=${CACHE:-target/cccgate-bench}
for tool in "$BIN" redis-server redis-benchmark redis-cli h2load python3; do
    command -v "$tool" >/dev/null || { echo "side_by_side: $tool not found (see the header of $0)" >&2; exit 2; }
done
rm -rf "$WORK" && mkdir -p "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits (bounded: 30 s) until something answers on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 300); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2)' "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "side_by_side: nothing listens on port $1 after 30 s" >&2
    exit 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
kernel_ticks() { awk '{print $15}' "/proc/$1/stat"; }
field() { sed -n "s/.*[ ^]$1=\([0-9.]*\).*/\1/p" | tail -1; }
declare -A R

echo "# side_by_side $(date -u +%FT%TZ) $(uptime | sed 's/.*load/load/')"

# --- Redis -------------------------------------------------------------------------------
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --logfile "$WORK/redis.log" &
PIDS+=($!)
wait_port "$RPORT"
# 1M rows of 64 bytes: a cache of certificate rows.
redis-benchmark -p "$RPORT" -t set -r 1000000 -n 1000000 -d 64 -P 16 -c 50 -q >/dev/null
redis_rps() { awk -F'"' '/"GET"/ {print $4}'; }
R[redis_p]=$(redis-benchmark -p "$RPORT" -t get -r 1000000 -n $((SECS * 600000)) -P 16 -c 50 --csv | redis_rps)
t0=$(cpu_ticks "${PIDS[0]}")
R[redis_u]=$(redis-benchmark -p "$RPORT" -t get -r 1000000 -n $((SECS * 50000)) -c 50 --csv | redis_rps)
t1=$(cpu_ticks "${PIDS[0]}")
# redis-server's CPU per unpipelined GET, as the gateway's per unary call below.
R[redis_u_cpu_us]=$(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK) * 1e6 / ($SECS * 50000), 1))")
kill "${PIDS[0]}"; PIDS=()
echo "redis GET pipelined (-P 16 -c 50): ${R[redis_p]}/s; unpipelined (-c 50): ${R[redis_u]}/s, redis-server CPU ${R[redis_u_cpu_us]} us a GET"

# --- cccgate bench grpc (embedded gateway, verdicts checked) -------------------------------
for mode in stream batch unary; do
    line=$("$BIN" bench grpc --mode "$mode" --seconds "$SECS" --progress off --cache-dir "$CACHE" 2>"$WORK/grpc-$mode.err")
    echo "$line"
    R[grpc_$mode]=$(field checks_per_sec <<<"$line")
    R[grpc_${mode}_p99]=$(field p99_us <<<"$line")
done
# Unary latency at half the unpipelined Redis rate (open loop).
half=$(python3 -c "print(round(${R[redis_u]} / 2))")
line=$("$BIN" bench grpc --mode unary --rate "$half" --seconds "$SECS" --progress off --cache-dir "$CACHE" 2>"$WORK/grpc-half.err")
echo "$line (--rate $half)"
R[grpc_half_p99]=$(field p99_us <<<"$line")
R[grpc_half_p50]=$(field p50_us <<<"$line")
# The same at half cccgate's own closed-loop unary rate: when the rate above is close to what
# the gateway (and the in-process client) can do at all, its p99 measures queueing, not a call.
own=$(python3 -c "print(round(${R[grpc_unary]} / 2))")
line=$("$BIN" bench grpc --mode unary --rate "$own" --seconds "$SECS" --progress off --cache-dir "$CACHE" 2>"$WORK/grpc-own.err")
echo "$line (--rate $own)"
R[grpc_own_p99]=$(field p99_us <<<"$line")
R[grpc_own_p50]=$(field p50_us <<<"$line")
R[grpc_own_rate]=$own
R[grpc_half_rate]=$half

# --- the gateway alone under h2load ----------------------------------------------------------
SNAPS=$(ls -d "$CACHE"/register-1200000-1-* | head -1)
mkdir -p "$WORK/snaps" && cp "$SNAPS"/snap-*.ccc "$WORK/snaps/"
GPORT=$(free_port)
MPORT=$(free_port)
"$BIN" serve --snapshot-dir "$WORK/snaps" --listen "127.0.0.1:$GPORT" --admin-listen off \
    --metrics-listen "127.0.0.1:$MPORT" --log-filter warn >"$WORK/serve.log" 2>&1 &
GPID=$!
PIDS+=($GPID)
wait_port "$GPORT"
"$BIN" synth listings --out "$WORK/listings.jsonl" --count 1000 --certs 1200000 >/dev/null
# gRPC-framed request bodies, protobuf encoded by hand (no generated code needed).
python3 - "$WORK" <<'EOF'
import json, struct, sys
work = sys.argv[1]
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F; n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)
def ld(field, data): return varint(field << 3 | 2) + varint(len(data)) + data
def listing(e):
    keys = ["listing_id", "merchant_id", "product_code", "certificate_number", "model", "event_time"]
    return b"".join(ld(i + 1, e[k].encode()) for i, k in enumerate(keys) if e.get(k))
rows = [json.loads(l) for l in open(f"{work}/listings.jsonl")]
frame = lambda m: b"\0" + struct.pack(">I", len(m)) + m
open(f"{work}/batch.bin", "wb").write(frame(b"".join(ld(1, listing(r)) for r in rows)))
open(f"{work}/check.bin", "wb").write(frame(ld(1, listing(rows[0]))))
EOF
h2() {  # h2load PATH BODY ARGS... -> "requests/s, gateway CPU ticks used, response data bytes"
    local path=$1 body=$2; shift 2
    local pid=${H2PID:-$GPID} port=${H2PORT:-$GPORT}
    local t0; t0=$(cpu_ticks "$pid")
    local k0; k0=$(kernel_ticks "$pid")
    local out; out=$(h2load -d "$body" -H 'content-type: application/grpc' -H 'te: trailers' "$@" \
        "http://127.0.0.1:$port/cccgate.v1.ListingCheck/$path")
    local t1; t1=$(cpu_ticks "$pid")
    local k1; k1=$(kernel_ticks "$pid")
    grep -q ' 0 failed' <<<"$out" || { echo "$out" >&2; echo "side_by_side: h2load saw failures" >&2; exit 1; }
    echo "$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out") $((t1 - t0))" \
        "$(sed -n 's/^traffic:.* (\([0-9]*\)) data.*/\1/p' <<<"$out") $((k1 - k0))"
}
read -r rps ticks bytes kticks < <(h2 CheckBatch "$WORK/batch.bin" -n $((SECS * 100)) -c 2 -m 4 -t 1)
R[h2_batch]=$(python3 -c "print(round($rps * 1000))")
R[h2_batch_cpu_ns]=$(python3 -c "print(round($ticks / $(getconf CLK_TCK) * 1e9 / ($SECS * 100 * 1000), 1))")
# The part of it spent in the kernel (the loopback TCP reads and writes, their copies and
# wake-ups): what no user-space change to the gateway can cut.
R[h2_batch_kernel_ns]=$(python3 -c "print(round($kticks / $(getconf CLK_TCK) * 1e9 / ($SECS * 100 * 1000), 1))")
R[bytes_full]=$(python3 -c "print(round($bytes / ($SECS * 100 * 1000), 1))")
read -r rps ticks bytes _ < <(h2 CheckBatch "$WORK/batch.bin" -n $((SECS * 100)) -c 2 -m 4 -t 1 -H 'cccgate-answer: lean')
R[h2_lean]=$(python3 -c "print(round($rps * 1000))")
R[bytes_lean]=$(python3 -c "print(round($bytes / ($SECS * 100 * 1000), 1))")
cpu_us_a_call() { python3 -c "print(round($1 / $(getconf CLK_TCK) * 1e6 / ($SECS * 10000), 1))"; }
read -r rps ticks _ < <(h2 Check "$WORK/check.bin" -n $((SECS * 10000)) -c 50 -m 1 -t 2)
R[h2_unary_c50]=$rps
R[h2_unary_c50_cpu_us]=$(cpu_us_a_call "$ticks")
read -r rps ticks _ < <(h2 Check "$WORK/check.bin" -n $((SECS * 10000)) -c 1 -m 16 -t 1)
R[h2_unary_c1]=$rps
R[h2_unary_c1_cpu_us]=$(cpu_us_a_call "$ticks")
# h2load counts HTTP 200s; a gRPC error is a 200 too: every listing sent must have a verdict.
sent=$((SECS * 100 * 1000 * 2 + SECS * 10000 * 2))
decided=$(python3 -c "
import urllib.request
text = urllib.request.urlopen('http://127.0.0.1:$MPORT/metrics').read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith('cccgate_checks_total{'))))")
[ "$decided" -eq "$sent" ] || { echo "side_by_side: gateway decided $decided of $sent listings sent" >&2; exit 1; }
kill "$GPID"; PIDS=()
if [ -n "${FLOOR:-}" ]; then
    # The same unary run against the HTTP/2 stack alone, answering every request with a fixed
    # Check answer and nothing of the gateway: hyper/h2 with a task per request (`--exec tokio`,
    # as under tonic), and tonic's `Server` with the gateway's settings (`--exec tonic`).
    for exec in tokio tonic; do
        H2PORT=$(free_port)
        "$FLOOR" --listen "127.0.0.1:$H2PORT" --exec "$exec" 2>"$WORK/floor-$exec.log" &
        H2PID=$!
        PIDS+=($H2PID)
        wait_port "$H2PORT"
        read -r rps ticks _ < <(h2 Check "$WORK/check.bin" -n $((SECS * 10000)) -c 50 -m 1 -t 2)
        R[floor_${exec}_c50]=$rps
        R[floor_${exec}_c50_cpu_us]=$(cpu_us_a_call "$ticks")
        kill "$H2PID"; PIDS=(); unset H2PID H2PORT
        echo "h2load Check -c 50 -m 1 against the stack alone (--exec $exec, fixed answer): ${R[floor_${exec}_c50]}/s, server CPU ${R[floor_${exec}_c50_cpu_us]} us a call"
    done
fi
echo "h2load CheckBatch(1000) -c 2 -m 4: ${R[h2_batch]} checks/s, gateway CPU ${R[h2_batch_cpu_ns]} ns a check (${R[h2_batch_kernel_ns]} ns of it in the kernel), ${R[bytes_full]} response bytes a verdict"
echo "h2load CheckBatch(1000) lean: ${R[h2_lean]} checks/s, ${R[bytes_lean]} response bytes a verdict"
echo "h2load Check -c 50 -m 1: ${R[h2_unary_c50]}/s, gateway CPU ${R[h2_unary_c50_cpu_us]} us a call; -c 1 -m 16: ${R[h2_unary_c1]}/s, ${R[h2_unary_c1_cpu_us]} us a call"

# --- the engine in-process ---------------------------------------------------------------------
line=$("$BIN" bench engine --batch 1000 --checks 5000000 --rounds 3 --cache-dir "$CACHE" 2>"$WORK/engine.err")
echo "$line"
R[engine_ns]=$(field ns_per_check <<<"$line")
R[mem_ns]=$(sed -n 's/.*256 MiB takes \([0-9.]*\) ns.*/\1/p' "$WORK/engine.err")

echo "# $(uptime | sed 's/.*load/load/')"
python3 - <<EOF
r = {$(for k in "${!R[@]}"; do printf '"%s": %s, ' "$k" "${R[$k]}"; done)}
rows = [
    ("stream / Redis pipelined GET", r["grpc_stream"] / r["redis_p"], "goal >= 2.0 (bar 1.3)"),
    ("batch / Redis pipelined GET", r["grpc_batch"] / r["redis_p"], ""),
    ("unary / Redis unpipelined GET", r["grpc_unary"] / r["redis_u"], "goal >= 1.0 (bar 0.7)"),
    ("gateway CPU a check (h2load batch) / in-process chunked check", r["h2_batch_cpu_ns"] / r["engine_ns"], "goal <= 1.3"),
    ("lean / full answers, bytes a verdict (h2load batch)", r["bytes_lean"] / r["bytes_full"], ""),
    ("h2load unary 50 conns x 1 / 1 conn x 16", r["h2_unary_c50"] / r["h2_unary_c1"], "goal >= 1.0"),
    ("gateway CPU a unary call, 50 conns x 1 / 1 conn x 16", r["h2_unary_c50_cpu_us"] / r["h2_unary_c1_cpu_us"], "goal <= 1.0"),
    ("gateway CPU a unary call (h2load 50 x 1) / redis-server CPU a GET (-c 50)", r["h2_unary_c50_cpu_us"] / r["redis_u_cpu_us"], ""),
    ("chunked check / one uncached memory access", r["engine_ns"] / r["mem_ns"], "goal <= 1.0 (bar 1.3)"),
    ("gateway kernel CPU a check (h2load batch) / in-process chunked check", r["h2_batch_kernel_ns"] / r["engine_ns"], "the part of the first no user-space work can cut"),
]
for exec, name in (("tokio", "hyper/h2 alone"), ("tonic", "tonic's Server alone")):
    if f"floor_{exec}_c50" in r:
        rows += [
            (f"{name} (fixed answer), h2load 50 x 1 calls/s / Redis unpipelined GET", r[f"floor_{exec}_c50"] / r["redis_u"], "a ceiling for unary on that stack"),
            (f"{name}, server CPU a call (50 x 1) / redis-server CPU a GET", r[f"floor_{exec}_c50_cpu_us"] / r["redis_u_cpu_us"], ""),
        ]
print("| ratio | value | goal |")
print("|---|---|---|")
for name, v, goal in rows:
    print(f"| {name} | {v:.2f} | {goal} |")
print(f"| unary p99 (p50) at half the unpipelined Redis rate, {r['grpc_half_rate']}/s (bench grpc --rate) | {r['grpc_half_p99']} us ({r['grpc_half_p50']} us) | < 1000 us |")
print(f"| unary p99 (p50) at half cccgate's own unary rate, {r['grpc_own_rate']}/s | {r['grpc_own_p99']} us ({r['grpc_own_p50']} us) | - |")
print(f"| half the unpipelined Redis rate / cccgate's own unary rate (the load that rate puts on cccgate) | {r['redis_u'] / 2 / r['grpc_unary']:.2f} | - |")
EOF
