#!/bin/bash
# journal.sh - what the journal costs: joinq bench's W1 shape (4 producers,
# 4 consumers, 64 requests in flight per connection, 100-byte items) on a
# joinqd in memory, then 32 producers on a joinqd with the journal on and
# fsync=always (every reply waits for its fdatasync; group commit shares
# one among all the clients of a loop turn), then fsync=interval.  Prints
# a markdown table with items/s and each as a share of the in-memory run.
#
#   bench/journal.sh            (N=200000 items; JOINQD, JOINQ as flat.sh)
#
# The state directory is a fresh one under $TMPDIR: put TMPDIR on the disk
# you mean to measure.  Exits non-zero if any run fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
N=${N:-200000}

need "$JOINQD" "$JOINQ"
work=$(mktemp -d)
trap 'stop_daemon; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# run NAME PRODUCERS JOINQD-FLAGS...: one bench run on a fresh joinqd;
# prints "NAME ITEMS/S".
run() {
	local name=$1 producers=$2
	shift 2
	rm -rf "$work/state"
	mkdir -p "$work/state"
	start_daemon --state-dir "$work/state" "$@"
	"$JOINQ" -H 127.0.0.1 -p "$port" bench --json -n "$N" -P 64 \
		--producers "$producers" --consumers 4 --timeout 600 \
		>"$work/bench.json" 2>"$work/bench.err" ||
		die "bench failed ($name): $(cat "$work/bench.err")"
	stop_daemon
	python3 -c 'import json, sys; r = json.load(open(sys.argv[1]));
print(sys.argv[2], int(r["items_per_s"]))' "$work/bench.json" "$name"
}

{
	run memory 4 --journal off
	run always-32 32 --journal on --fsync always
	run interval-32 32 --journal on --fsync interval
} >"$work/results"

python3 - "$work/results" "$N" <<-'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
base = float(rows[0][1])
print("joinq bench -n %s -P 64 --consumers 4, 100-byte items:\n" % sys.argv[2])
print("| joinqd | producers | items/s | share of in-memory |")
print("| --- | ---: | ---: | ---: |")
for name, ips in rows:
    what, _, prod = name.partition("-")
    label = "in memory" if what == "memory" else "journal, fsync=" + what
    print("| %s | %s | %s | %.0f%% |" % (label, prod or "4", ips,
                                         100 * float(ips) / base))
PY
