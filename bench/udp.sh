#!/bin/bash
# udp.sh - UDP against TCP: one joinqd (in memory), and `joinq bench -n N
# -P 16` over TCP and over UDP (-u) in turn, REPS times, interleaved.
# Prints a markdown table of the medians, UDP as a share of TCP (issue
# 15's target: 0.5).
#
#   bench/udp.sh            (N=200000 items, REPS=3; JOINQD, JOINQ as
#                            flat.sh)
#
# Exits non-zero if any run fails (bench's exactly-once check included).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
N=${N:-200000}
REPS=${REPS:-3}

need "$JOINQD" "$JOINQ"
work=$(mktemp -d)
trap 'stop_daemon; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

start_daemon --journal off

# bench TRANSPORT: one run; prints "TRANSPORT ITEMS/S".
bench() {
	local transport=$1 flag=()
	[ "$transport" = udp ] && flag=(-u)
	"$JOINQ" "${flag[@]}" -H 127.0.0.1 -p "$port" bench --json \
		--timeout 600 -n "$N" -P 16 >"$work/bench.json" \
		2>"$work/bench.err" ||
		die "bench failed ($transport): $(cat "$work/bench.err")"
	python3 -c 'import json, sys; r = json.load(open(sys.argv[1]));
print(sys.argv[2], r["items_per_s"])' "$work/bench.json" "$transport"
}

for _ in $(seq "$REPS"); do
	for transport in tcp udp; do
		bench "$transport"
	done
done >"$work/results"

python3 - "$work/results" "$N" "$REPS" <<-'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    transport, ips = line.split()
    runs.setdefault(transport, []).append(float(ips))
tcp = statistics.median(runs["tcp"])
udp = statistics.median(runs["udp"])
print("joinq bench -n %s -P 16, TCP and UDP to one joinqd, medians of %s "
      "runs:\n" % (sys.argv[2], sys.argv[3]))
print("| TCP items/s | UDP items/s | UDP share of TCP |")
print("| ---: | ---: | ---: |")
print("| %.0f | %.0f | %.2f |" % (tcp, udp, udp / tcp))
PY
