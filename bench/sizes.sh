#!/bin/bash
# sizes.sh - joinqd beside plain Redis as items grow: the shared instrument
# (../shared/bench/compare.sh, its W1 shape: 4 producers, 4 consumers, 64
# requests in flight per connection) at 100 B, 1 KiB, 64 KiB and 1 MiB,
# fewer items for the big ones, REPS runs of each, joinqd in memory with
# max_frame raised to 4 MiB.  Prints a markdown table of the medians:
# items/s of each, joinqd's as a share of Redis's, and the server CPU per
# item of each (compare.sh's column: the server process's user + system
# time over the items).  Redis here is LPUSH/BRPOP, with no acknowledgement;
# joinqd answers put, get and task_done.
#
#   bench/sizes.sh                (REPS=3; JOINQD as flat.sh;
#                                  SIZES="100 1024 65536 1048576")
#   COMPARE=path/to/compare.sh bench/sizes.sh
#
# Needs redis-server (Debian: apt-get install -y redis-server).  The raw
# lines stay in $OUT (default: a temporary directory, printed at the end).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
COMPARE=${COMPARE:-$top/../shared/bench/compare.sh}
SIZES=${SIZES:-"100 1024 65536 1048576"}
REPS=${REPS:-3}

need "$JOINQD"
command -v redis-server >/dev/null ||
	die "redis-server is missing (apt-get install -y redis-server)"
[ -x "$COMPARE" ] || die "$COMPARE is missing (set COMPARE)"
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

# items SIZE: how many items a W1 run moves; about a second of work each.
items() {
	case $1 in
	100) echo 1000000 ;;
	1024) echo 500000 ;;
	65536) echo 40000 ;;
	1048576) echo 2500 ;;
	*) echo $((40000 * 65536 / $1 + 1000)) ;;
	esac
}

for size in $SIZES; do
	SIZE=$size W1_ITEMS=$(items "$size") WORKLOADS=W1 \
	TARGETS="redis joinqd" REPS=$REPS RAW="$OUT/$size.raw" \
	JOINQD_CMD="$JOINQD --port %PORT% -b 127.0.0.1 --default-maxsize 0 \
--journal off --max-frame 4M" \
		"$COMPARE" >"$OUT/$size.log" 2>&1 ||
		die "compare.sh failed at $size bytes: see $OUT/$size.log"
done

echo "| item | Redis items/s | joinqd items/s | joinqd / Redis |" \
	"Redis CPU µs/item | joinqd CPU µs/item |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
for size in $SIZES; do
	awk -v size="$size" '
	{
		delete f
		for (i = 1; i <= NF; i++) {
			eq = index($i, "=")
			if (eq) f[substr($i, 1, eq - 1)] = substr($i, eq + 1)
		}
		if (f["workload"] != "W1" || f["ok"] != "1") next
		t = f["label"]; k = ++n[t]
		ips[t, k] = f["items_per_s"]
		cpu[t, k] = f["server_cpu_s"] * 1e6 / f["items"]
	}
	function median(a, t,   m, i, j, v, x) {
		m = n[t]
		for (i = 1; i <= m; i++) v[i] = a[t, i]
		for (i = 2; i <= m; i++)
			for (j = i; j > 1 && v[j-1] > v[j]; j--) {
				x = v[j]; v[j] = v[j-1]; v[j-1] = x
			}
		return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
	}
	END {
		if (!n["redis"] || !n["joinqd"]) {
			printf "| %s | failed | failed | - | - | - |\n", size
			exit
		}
		r = median(ips, "redis"); j = median(ips, "joinqd")
		printf "| %s | %.0f | %.0f | %.2f | %.1f | %.1f |\n", size, r, j,
		       j / r, median(cpu, "redis"), median(cpu, "joinqd")
	}' "$OUT/$size.raw"
done
echo
echo "raw lines: $OUT/*.raw (compare.sh --table RAW shows each in full)"
