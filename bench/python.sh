#!/bin/sh
# python.sh - the Python client against the standard library, in one run:
# the seeds' program (4 producer processes put 100-byte strings, 4
# consumer processes get and task_done each, the main process joins) with
# multiprocessing.JoinableQueue, with joinq.JoinableQueue over TCP one
# request at a time (put; get, task_done), and with joinq's put_many and
# its pipelined consumer loop (q.consume()), on a joinqd of its own
# without a journal.  Prints items/s and the ratios to the standard
# library's, each run's and the medians (bench/pyqueue.py does the work;
# its flags may follow, --profile DIR for one).
#
#   bench/python.sh             (N=200000 items, REPS=3 runs of each;
#                                JOINQD as flat.sh, PYTHON=python3)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
PYTHON=${PYTHON:-python3}
N=${N:-200000}
REPS=${REPS:-3}

need "$JOINQD" "$PYTHON"
work=$(mktemp -d)
trap 'stop_daemon; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

start_daemon --journal off --default-maxsize 0
"$PYTHON" --version
"$PYTHON" "$here/pyqueue.py" --port "$port" --items "$N" --reps "$REPS" "$@"
