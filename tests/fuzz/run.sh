#!/bin/sh
# run.sh - runs each libFuzzer harness of tests/fuzz for a bounded time over
# a copy of its seed corpus, and says in TAP, one line a harness, whether
# it ended with no crash, leak, timeout or out-of-memory.  The harnesses'
# own output goes to stderr (the test's log under make check).
#
# make check runs it as a test; make fuzz runs it for longer.  From the
# environment (the Makefile sets them):
#   JOINQ_BUILDDIR, JOINQ_SRCDIR   the build and source trees
#   JOINQ_FUZZ_OK                  "yes" if configure found a FUZZ_CC that
#                                  links -fsanitize=fuzzer
#   JOINQ_FUZZ_CC                  that compiler, for the message if not
#   JOINQ_FUZZ_TIME                seconds per harness (default 10)
#   JOINQ_FUZZ_PARALLEL            1: run the harnesses side by side
#   JOINQ_FUZZ_KEEP                a directory to keep each working corpus
#                                  in (and reuse); default: a temporary one
# A crash is written to $JOINQ_BUILDDIR/tests/fuzz/NAME-crash-* (or -leak-,
# -timeout-, -oom-); rerun it with tests/fuzz/NAME FILE.
set -u

harnesses="fuzz_request fuzz_engine fuzz_journal"
build=${JOINQ_BUILDDIR:-.}
src=${JOINQ_SRCDIR:-.}
time=${JOINQ_FUZZ_TIME:-10}
n=0
status=0

echo "1..3"

if [ "${JOINQ_FUZZ_OK:-no}" != yes ]; then
	for h in $harnesses; do
		n=$((n + 1))
		echo "not ok $n - $h: libFuzzer is missing: '${JOINQ_FUZZ_CC:-clang}'" \
		     "cannot link -fsanitize=fuzzer,address,undefined; install" \
		     "clang and libclang-rt-dev (scripts/deps), or configure" \
		     "FUZZ_CC=a-clang-that-can, then rerun configure"
	done
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/joinq-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# Runs harness $1 in the background or not; its output in $tmp/$1.out,
# its exit status in $tmp/$1.rc.
run() {
	h=$1
	if [ -n "${JOINQ_FUZZ_KEEP:-}" ]; then
		corpus=$JOINQ_FUZZ_KEEP/${h#fuzz_}
	else
		corpus=$tmp/corpus-${h#fuzz_}
	fi
	mkdir -p "$corpus" "$build/tests/fuzz" || return 1
	# a copy: the source tree may be read-only (make distcheck)
	cp "$src/tests/fuzz/corpus/${h#fuzz_}"/* "$corpus"/ &&
	chmod -R u+w "$corpus" || return 1
	"$build/tests/fuzz/$h" -max_total_time="$time" -rss_limit_mb=2048 \
		-timeout=30 -print_final_stats=1 \
		-artifact_prefix="$build/tests/fuzz/$h-" "$corpus" \
		>"$tmp/$h.out" 2>&1
	echo $? >"$tmp/$h.rc"
}

for h in $harnesses; do
	if [ ! -x "$build/tests/fuzz/$h" ]; then
		echo "joinq: $build/tests/fuzz/$h was not built" >"$tmp/$h.out"
		echo 127 >"$tmp/$h.rc"
	elif [ "${JOINQ_FUZZ_PARALLEL:-0}" = 1 ]; then
		run $h &
	else
		run $h
	fi
done
wait

for h in $harnesses; do
	n=$((n + 1))
	echo "---- $h ----" >&2
	cat "$tmp/$h.out" >&2
	rc=$(cat "$tmp/$h.rc" 2>/dev/null || echo 1)
	# the figures of the run: executions, their rate, coverage
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$h.out")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$tmp/$h.out")
	cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$tmp/$h.out" | tail -n 1)
	if [ "$rc" = 0 ]; then
		echo "ok $n - $h: ${time} s, ${runs:-?} runs (${rate:-?}/s), ${cov:-cov ?}," \
		     "no crash, leak or timeout"
	else
		art=$(sed -n "s/.*Test unit written to //p" "$tmp/$h.out" | head -n 1)
		echo "not ok $n - $h: exit $rc: a property violated, a crash, leak," \
		     "timeout or out-of-memory${art:+; the input is $art}; see the log"
		status=1
	fi
done
exit $status
