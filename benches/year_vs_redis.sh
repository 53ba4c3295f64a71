#!/bin/bash
# The 2021 year at 0.1 scale against Redis pipelined GET, in one run: Redis before and after.
# Usage: BIN=target/release/cccgate benches/year_vs_redis.sh [more bench year flags]. Needs
# redis-server and redis-benchmark (apt-get install redis-server). Loopback only.
set -u
BIN=${BIN:-target/release/cccgate}
RPORT=${RPORT:-16412}
WORK=$(mktemp -d)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --logfile "$WORK/redis.log" &
RPID=$!
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-benchmark -p "$RPORT" -t set -r 1000000 -n 1000000 -d 64 -P 16 -c 50 -q >/dev/null
rp() { redis-benchmark -p "$RPORT" -t get -r 1000000 -n 3000000 -P 16 -c 50 --csv | awk -F'"' '/"GET"/ {print $4}'; }
uptime
r1=$(rp); echo "redis GET -P 16 -c 50: $r1/s"
"$BIN" bench year --profile 2021 --scale 0.1 --progress off "$@" | tee "$WORK/year.txt"
r2=$(rp); echo "redis GET -P 16 -c 50: $r2/s"
uptime
kill "$RPID"; wait "$RPID" 2>/dev/null
y=$(grep -oE "checks_per_sec=[0-9]+" "$WORK/year.txt" | head -1 | cut -d= -f2)
python3 -c "r=($r1+$r2)/2; print(f'year {int(\"$y\" or 0)}/s, redis mean {r:.0f}/s, ratio {int(\"$y\" or 0)/r:.2f}')"
rm -rf "$WORK"
