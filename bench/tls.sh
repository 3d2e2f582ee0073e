#!/bin/bash
# tls.sh - what TLS costs: one joinqd (in memory) serving plain TCP and
# TLS (tls_port, an EC P-256 certificate from a throwaway CA made here),
# and joinq bench against each port in turn, REPS times, interleaved:
# the W1 shape (4 producers, 4 consumers, 64 requests in flight per
# connection, 100-byte items), and the connection rate (bench --mode
# latency --reconnect: each put -> get -> task_done cycle on a connection
# of its own, so that cycles/s are connections/s, one at a time).  Prints
# a markdown table of the medians, TLS as a share of plain.
#
#   bench/tls.sh            (N=300000 items, C=2000 cycles, REPS=3;
#                            JOINQD, JOINQ as flat.sh)
#
# Exits non-zero if any run fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
N=${N:-300000}
C=${C:-2000}
REPS=${REPS:-3}

need "$JOINQD" "$JOINQ" openssl
work=$(mktemp -d)
trap 'stop_daemon; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# A CA and a certificate for localhost, as README.md's "TLS" makes them.
(
	cd "$work"
	ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
	# shellcheck disable=SC2086
	openssl req -x509 $ec -keyout ca.key -out ca.crt -subj /CN=bench-ca \
		-days 2
	# shellcheck disable=SC2086
	openssl req $ec -keyout server.key -out server.csr -subj /CN=localhost
	echo subjectAltName=DNS:localhost > server.ext
	openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key \
		-CAcreateserial -out server.crt -days 2 -extfile server.ext
) >"$work/openssl.log" 2>&1 || die "openssl: $(cat "$work/openssl.log")"

start_daemon --journal off --tls-port 0 --tls-cert-file "$work/server.crt" \
	--tls-key-file "$work/server.key"
tls_port=$(sed -n 's/.*, 127\.0\.0\.1:\([0-9]*\) (TLS).*/\1/p' \
	"$work/joinqd.log" | head -n 1)
[ -n "$tls_port" ] || die "no TLS port in: $(cat "$work/joinqd.log")"

# bench NAME TRANSPORT ARGS...: one run; prints "NAME TRANSPORT ITEMS/S".
bench() {
	local name=$1 transport=$2 at
	shift 2
	at=(-H 127.0.0.1 -p "$port")
	[ "$transport" = tls ] &&
		at=(--tls --cacert "$work/ca.crt" -H localhost -p "$tls_port")
	"$JOINQ" "${at[@]}" bench --json --timeout 600 "$@" \
		>"$work/bench.json" 2>"$work/bench.err" ||
		die "bench failed ($name, $transport): $(cat "$work/bench.err")"
	python3 -c 'import json, sys; r = json.load(open(sys.argv[1]));
print(sys.argv[2], sys.argv[3], r["items_per_s"])' "$work/bench.json" \
		"$name" "$transport"
}

for _ in $(seq "$REPS"); do
	for transport in plain tls; do
		bench w1 "$transport" -n "$N" -P 64 --producers 4 --consumers 4
		bench connect "$transport" --mode latency --reconnect -n "$C"
	done
done >"$work/results"

python3 - "$work/results" "$N" "$C" "$REPS" <<-'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, transport, ips = line.split()
    runs.setdefault((name, transport), []).append(float(ips))
print("joinq bench, plain TCP and TLS to one joinqd, medians of %s runs:\n"
      % sys.argv[4])
print("| workload | plain | TLS | TLS share of plain |")
print("| --- | ---: | ---: | ---: |")
for name, label in (("w1", "W1 (-n %s -P 64, 4+4): items/s" % sys.argv[2]),
                    ("connect", "new connection per cycle (-n %s): "
                                "connections/s" % sys.argv[3])):
    plain = statistics.median(runs[(name, "plain")])
    tls = statistics.median(runs[(name, "tls")])
    print("| %s | %.0f | %.0f | %.2f |" % (label, plain, tls, tls / plain))
PY
