# lib.sh - what the bench scripts share, sourced by them: starting and
# stopping a joinqd of their own.  The script sets $work (a scratch
# directory), $JOINQD and a die() that names it.

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
