# lib.sh - what the bench scripts share, sourced first by each (which has
# set $here, its own directory): the programs it runs (JOINQD and JOINQ,
# the build tree's unless set), die() and need(), and starting and
# stopping a joinqd of its own, which logs into the script's $work (a
# scratch directory it makes).

top=$(cd "$here/.." && pwd)
JOINQD=${JOINQD:-$top/build/daemon/joinqd}
JOINQ=${JOINQ:-$top/build/client/joinq}

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# need PROGRAM...: each is built (a path) or installed (a command name).
need() {
	local tool
	for tool in "$@"; do
		case $tool in
		*/*) [ -x "$tool" ] || die "$tool is not built (scripts/build build)" ;;
		*) command -v "$tool" >/dev/null ||
			die "$tool is missing (scripts/deps installs it)" ;;
		esac
	done
}

daemon_pid=

# start_daemon FLAGS...: joinqd on a free loopback port (-p 0; its log says
# which), logging to $work/joinqd.log; sets $port and $daemon_pid.
start_daemon() {
	"$JOINQD" -p 0 -b 127.0.0.1 --log-level info "$@" \
		2>"$work/joinqd.log" &
	daemon_pid=$!
	port=
	for _ in $(seq 100); do
		port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
			"$work/joinqd.log" | head -n 1)
		[ -n "$port" ] && return 0
		kill -0 "$daemon_pid" 2>/dev/null ||
			die "joinqd did not start: $(cat "$work/joinqd.log")"
		sleep 0.05
	done
	die "joinqd did not say its port: $(cat "$work/joinqd.log")"
}

stop_daemon() {
	if [ -n "$daemon_pid" ]; then
		kill "$daemon_pid" 2>/dev/null || true
		wait "$daemon_pid" 2>/dev/null || true
		daemon_pid=
	fi
}
