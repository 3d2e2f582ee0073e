#!/bin/bash
# flat.sh - the flat-cost curves: does an operation cost the same however
# much the daemon holds?  Measures `joinq bench` (items/s and p99 latency)
# along four axes, each point on a fresh joinqd of its own on a free
# loopback port (journal off):
#
#   depth     items already queued in the bench queue (bench --prefill: the
#             timed run works at that depth, the rest is drained after)
#   queues    queues that exist, each holding an item (bench/load.py)
#   inflight  tasks got with an hour's lease and not acknowledged
#   conns     idle TCP connections open meanwhile
#
# Writes bench/flat.dat (the table, one gnuplot block per axis),
# bench/flat.md (a markdown table) and bench/flat.png (gnuplot).
#
#   bench/flat.sh               the full curves (several minutes)
#   QUICK=1 bench/flat.sh       smaller points, for a try
#
# Environment: JOINQD, JOINQ (default build/daemon/joinqd,
# build/client/joinq), BENCH_ARGS (the fixed run, default below), N (its
# items), OUT (the output directory, default bench/).  Exits non-zero if
# any step fails; whatever it started is stopped on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
OUT=${OUT:-$here}
QUICK=${QUICK:-}
BENCH_ARGS=${BENCH_ARGS:---producers 2 --consumers 2 -P 16 -d 100}
BENCH_TIMEOUT=600         # seconds one bench run may take, prefill included
SETUP_TIMEOUT=600         # seconds one load step may take

if [ -n "$QUICK" ]; then
	N=${N:-10000}
	depth_points="0 1000 10000 100000"
	queue_points="1 10 100 1000"
	inflight_points="0 1000 10000 100000"
	conn_points="1 10 100 1000"
else
	N=${N:-50000}
	depth_points="0 10000 100000 1000000 10000000"
	queue_points="1 10 100 1000 10000"
	inflight_points="0 1000 10000 100000 1000000"
	conn_points="1 10 100 1000 10000"
fi

need "$JOINQD" "$JOINQ" python3 gnuplot

# 10k idle connections need descriptors: raise the soft limit as far as
# the hard one allows, and leave out the points beyond it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)

work=$(mktemp -d /tmp/joinq-flat.XXXXXX)
load_pid=

stop_load() {
	if [ -n "$load_pid" ]; then
		kill "$load_pid" 2>/dev/null || true
		wait "$load_pid" 2>/dev/null || true
		load_pid=
	fi
}

cleanup() {
	stop_load
	stop_daemon
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# joinqd with room for every point's queues and connections; sets $port.
start_point() {
	cat >"$work/joinqd.conf" <<-EOF
	max_queues = 20000
	max_connections = 20000
	EOF
	start_daemon -c "$work/joinqd.conf" --journal off
}

# Runs the fixed bench; appends "AXIS VALUE ITEMS/S P99_MS" to the table.
measure() {
	local axis=$1 value=$2 prefill=${3:-0}
	local out="$work/bench.json"
	# shellcheck disable=SC2086
	if ! "$JOINQ" -H 127.0.0.1 -p "$port" bench --json -n "$N" --no-drain \
		--prefill "$prefill" --timeout "$BENCH_TIMEOUT" $BENCH_ARGS \
		>"$out" 2>"$work/bench.err"; then
		cat "$work/bench.err" >&2
		die "bench failed at $axis = $value"
	fi
	python3 - "$out" "$axis" "$value" >>"$work/flat.dat" <<-'EOF'
	import json, sys
	r = json.load(open(sys.argv[1]))
	print("%-9s %9s %12.0f %10.3f" % (sys.argv[2], sys.argv[3],
	      r["items_per_s"], r["latency_us"]["p99"] / 1000))
	EOF
	tail -n 1 "$work/flat.dat"
}

load() {
	timeout "$SETUP_TIMEOUT" python3 "$here/load.py" 127.0.0.1 "$port" "$@" ||
		die "load.py $* failed"
}

block() {   # a gnuplot data block per axis, two blank lines between
	[ -s "$work/flat.dat" ] && printf '\n\n' >>"$work/flat.dat"
	printf '# %s\n' "$1" >>"$work/flat.dat"
}

: >"$work/flat.dat"
echo "flat.sh: joinq bench -n $N $BENCH_ARGS; fresh joinqd per point" >&2

block "depth: items queued in the bench queue before the run"
for d in $depth_points; do
	start_point
	measure depth "$d" "$d"
	stop_daemon
done

block "queues: queues that exist, each with an item (the bench's own included)"
for q in $queue_points; do
	start_point
	[ "$q" -gt 1 ] && load queues $((q - 1))
	measure queues "$q"
	stop_daemon
done

block "inflight: tasks got with a lease and not acknowledged"
for f in $inflight_points; do
	start_point
	[ "$f" -gt 0 ] && load inflight "$f"
	measure inflight "$f"
	stop_daemon
done

block "conns: idle TCP connections open during the run"
for c in $conn_points; do
	if [ "$c" -gt $((fd_limit - 64)) ]; then
		echo "flat.sh: skipping $c connections: ulimit -n is $fd_limit" >&2
		continue
	fi
	start_point
	python3 "$here/load.py" 127.0.0.1 "$port" idle "$c" >"$work/idle.out" &
	load_pid=$!
	for _ in $(seq 600); do
		grep -q ready "$work/idle.out" 2>/dev/null && break
		kill -0 "$load_pid" 2>/dev/null || die "load.py idle $c failed"
		sleep 0.1
	done
	grep -q ready "$work/idle.out" || die "load.py idle $c did not get ready"
	measure conns "$c"
	stop_load
	stop_daemon
done

# ---- the outputs -------------------------------------------------------------

{
	echo "# joinq flat costs: joinq bench -n $N $BENCH_ARGS"
	echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -sr)${QUICK:+, QUICK}"
	echo "# axis     value      items/s   p99_ms"
	cat "$work/flat.dat"
} >"$OUT/flat.dat"

python3 - "$OUT/flat.dat" >"$OUT/flat.md" <<-'EOF'
import sys
titles = {"depth": "queue depth", "queues": "queues", "inflight":
          "tasks in flight", "conns": "idle connections"}
lines = open(sys.argv[1]).read().splitlines()
print("Per-operation cost along four axes: " +
      lines[0].lstrip("# ").replace("joinq flat costs: ", "`") + "`, " +
      lines[1].lstrip("# ") + ".\n")
print("| axis | value | items/s | p99 ms |")
print("| --- | ---: | ---: | ---: |")
for line in lines:
    f = line.split()
    if len(f) == 4 and not line.startswith("#"):
        print("| %s | %s | %s | %s |" % (titles[f[0]], f[1], f[2], f[3]))
EOF

gnuplot <<-EOF
set terminal pngcairo size 1200,800 font ",10"
set output "$OUT/flat.png"
set multiplot layout 2,2 title "joinq flat costs: joinq bench -n $N $BENCH_ARGS"
set ylabel "items/s"
set y2label "p99 ms"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set key bottom left
set grid
titles = "'queue depth' 'queues' 'tasks in flight' 'idle connections'"
do for [i=0:3] {
	set xlabel word(titles, i + 1)
	plot "$OUT/flat.dat" index i using 0:3:xtic(2) with linespoints lw 2 \
		title "items/s", \
	     "" index i using 0:4 axes x1y2 with linespoints lw 2 title "p99 ms"
}
unset multiplot
EOF
echo "flat.sh: wrote $OUT/flat.dat, $OUT/flat.md, $OUT/flat.png" >&2
