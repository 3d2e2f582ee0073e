#!/bin/bash
# replicated.sh - what the replicated journal costs: joinq bench's W1 shape
# (4 producers, 4 consumers, 64 requests in flight per connection, 100-byte
# items) and the W3-style cycle latency (one connection: put, get,
# task_done, one request at a time) on a joinqd in memory, with the file
# journal (fsync=always) and with journal = nats on a three-node NATS
# cluster of its own on loopback (3 replicas, file storage; one standby
# following the stream, as in production).  Also times JetStream's own
# round trip (a publish to a 3-replica stream and its PubAck, one at a
# time), which bounds what a replicated change can cost.  Prints a
# markdown table of ratios, all from this one run.
#
#   bench/replicated.sh         (N=200000 items; JOINQD, JOINQ as flat.sh;
#                                NATS_SERVER, default nats-server)
#
# Everything shares this machine: the three NATS servers, both joinqd and
# the bench.  Exits non-zero if any run fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
NATS_SERVER=${NATS_SERVER:-nats-server}
N=${N:-200000}
CYCLES=${CYCLES:-5000}

need "$JOINQD" "$JOINQ" "$NATS_SERVER"
work=$(mktemp -d)
nats_pids=()
standby_pid=
stop_all() {
	stop_daemon
	[ -n "$standby_pid" ] && kill "$standby_pid" 2>/dev/null || true
	for pid in "${nats_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${nats_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# free_port: a loopback TCP port nobody listens on now.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The cluster: client, route and monitoring ports per node.
declare -a cport rport hport
for i in 1 2 3; do
	cport[$i]=$(free_port); rport[$i]=$(free_port); hport[$i]=$(free_port)
done
routes="nats-route://127.0.0.1:${rport[1]},nats-route://127.0.0.1:${rport[2]},nats-route://127.0.0.1:${rport[3]}"
for i in 1 2 3; do
	mkdir -p "$work/n$i"
	cat >"$work/n$i.conf" <<-EOF
	server_name: n$i
	listen: 127.0.0.1:${cport[$i]}
	http: 127.0.0.1:${hport[$i]}
	jetstream { store_dir: "$work/n$i" }
	cluster { name: jqbench, listen: 127.0.0.1:${rport[$i]}, routes: [$routes] }
	EOF
	"$NATS_SERVER" -c "$work/n$i.conf" >"$work/n$i.log" 2>&1 &
	nats_pids+=($!)
done
servers="nats://127.0.0.1:${cport[1]},nats://127.0.0.1:${cport[2]},nats://127.0.0.1:${cport[3]}"
for _ in $(seq 300); do
	ok=0
	for i in 1 2 3; do
		curl -fs "http://127.0.0.1:${hport[$i]}/healthz" >/dev/null && ok=$((ok + 1))
	done
	[ $ok = 3 ] && break
	sleep 0.1
done
[ $ok = 3 ] || die "the NATS cluster did not become healthy"

# JetStream's round trip: one publish at a time to a 3-replica stream of
# its own, each waiting for its PubAck, with the headers joinqd's appends
# carry (a message id, the expected last sequence); the NATS text
# protocol, by hand.
python3 - "${cport[1]}" >"$work/rtt" <<-'PY'
import json, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
f.readline()
s.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\nSUB _INBOX.rtt 1\r\n')
def request(subject, body):
    s.sendall(b"PUB %s _INBOX.rtt %d\r\n%s\r\n" % (subject, len(body), body))
    while True:
        line = f.readline()
        if line.startswith(b"MSG") or line.startswith(b"HMSG"):
            data = f.read(int(line.split()[-1]) + 2)[:-2]
            if line.startswith(b"HMSG"):   # a status: no responders yet
                return {"error": data.decode(errors="replace")}
            return json.loads(data)
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
cfg = {"name": "rtt", "subjects": ["rtt.x"], "num_replicas": 3, "storage": "file"}
for _ in range(100):
    r = request(b"$JS.API.STREAM.CREATE.rtt", json.dumps(cfg).encode())
    if "error" not in r:
        break
    time.sleep(0.1)
def fenced(seq, body):
    """A publish as joinqd makes one: deduplicated and fenced."""
    hdr = (b"NATS/1.0\r\nNats-Msg-Id: rtt-%d\r\n"
           b"Nats-Expected-Last-Sequence: %d\r\n\r\n" % (seq + 1, seq))
    s.sendall(b"HPUB rtt.x _INBOX.rtt %d %d\r\n%s%s\r\n" %
              (len(hdr), len(hdr) + len(body), hdr, body))
    while True:
        line = f.readline()
        if line.startswith(b"MSG"):
            return json.loads(f.read(int(line.split()[-1]) + 2))
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
times = []
for i in range(2000):
    t = time.perf_counter()
    r = fenced(i, b"x" * 100)
    times.append(time.perf_counter() - t)
    assert "seq" in r, r
times.sort()
print("%.3f" % (times[len(times) // 2] * 1000))
PY

# run NAME JOINQD-FLAGS...: the W1 run and the cycle run on a fresh joinqd;
# prints "NAME ITEMS/S CYCLE-P50-MS".
run() {
	local name=$1
	shift
	rm -rf "$work/state"
	mkdir -p "$work/state"
	start_daemon --state-dir "$work/state" "$@"
	for _ in $(seq 200); do   # a replicated one takes over first
		"$JOINQ" -H 127.0.0.1 -p "$port" qsize >/dev/null 2>&1 && break
		sleep 0.05
	done
	# A standby follows the stream, as it would on another host.
	if [ "$name" = nats ]; then
		"$JOINQD" -p 0 -b 127.0.0.1 --state-dir "$work/standby" \
			"$@" --advertise 127.0.0.1:1 2>"$work/standby.log" &
		standby_pid=$!
		sleep 1
	fi
	"$JOINQ" -H 127.0.0.1 -p "$port" bench --json -n "$N" -P 64 \
		--producers 4 --consumers 4 --timeout 600 \
		>"$work/w1.json" 2>"$work/bench.err" ||
		die "bench failed ($name): $(cat "$work/bench.err")"
	"$JOINQ" -H 127.0.0.1 -p "$port" bench --json --mode latency \
		-n "$CYCLES" --timeout 600 >"$work/w3.json" 2>"$work/bench.err" ||
		die "bench failed ($name, latency): $(cat "$work/bench.err")"
	stop_daemon
	python3 - "$name" "$work/w1.json" "$work/w3.json" <<-'PY'
	import json, sys
	w1 = json.load(open(sys.argv[2]))
	w3 = json.load(open(sys.argv[3]))
	print(sys.argv[1], int(w1["items_per_s"]),
	      "%.3f" % (w3["latency_us"]["p50"] / 1000))
	PY
}

nats_flags=(--journal nats --nats-servers "$servers" --nats-stream bench
	--nats-replicas 3 --failover-timeout 1 --advertise 127.0.0.1:2)
{
	run memory --journal off
	run file --journal on --fsync always
	run nats "${nats_flags[@]}"
} >"$work/results"

python3 - "$work/results" "$N" "$(cat "$work/rtt")" <<-'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
base = float(rows[0][1])
rtt = float(sys.argv[3])
print("joinq bench -n %s -P 64, 4 producers, 4 consumers, 100-byte items;"
      " cycle = put, get, task_done one at a time.\n" % sys.argv[2])
print("JetStream round trip (a fenced publish and its PubAck, 3 replicas):"
      " p50 %.3f ms\n" % rtt)
print("| joinqd | items/s | share of in-memory | cycle p50 ms | cycle / JetStream RTT |")
print("| --- | ---: | ---: | ---: | ---: |")
names = {"memory": "in memory", "file": "file journal, fsync=always",
         "nats": "journal = nats, 3 replicas"}
for name, ips, p50 in rows:
    print("| %s | %s | %.2f | %s | %.1f |" % (names[name], ips,
          float(ips) / base, p50, float(p50) / rtt))
PY
