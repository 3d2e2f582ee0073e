"""pyqueue - the seeds' program, timed: 4 producer processes put 100-byte
strings, 4 consumer processes get and task_done each, and the main
process joins; with multiprocessing.JoinableQueue and with joinq's, side
by side in one run.  bench/python.sh runs it against a joinqd of its own.

    python3 bench/pyqueue.py --port PORT [--items N] [--reps N]
                             [--modes stdlib,plain,pipelined] [--profile DIR]

Modes:
  stdlib     multiprocessing.JoinableQueue
  plain      joinq.JoinableQueue over TCP: put, get, task_done, one by one
  pipelined  joinq.JoinableQueue: put_many in batches, and the client's
             pipelined consumer loop

Each rep runs every mode once, in turn, and prints a line per mode:
items/s and the ratio to that rep's stdlib run; the last lines are the
medians over the reps.  The clock runs from the producers' start (every
process is up and waiting) until the main process's join returns.  Each
joinq run checks with the daemon that every item was put and finished.
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "client", "python"))

SIZE = 100
RUNS = itertools.count(1)       # a queue of its own for each run


def items_for(producer: int, count: int) -> list[str]:
    """count distinct SIZE-byte strings of one producer."""
    return [("%d:%d:" % (producer, i)).ljust(SIZE, "x") for i in range(count)]


# ---- the producers and consumers of each mode ------------------------------

def produce_one_by_one(q: Any, producer: int, count: int, go: Any) -> None:
    items = items_for(producer, count)
    go.wait()
    for item in items:
        q.put(item)


def consume_one_by_one(q: Any) -> None:
    while True:
        item = q.get()
        q.task_done()
        if item is None:
            return


def produce_batches(q: Any, producer: int, count: int, go: Any,
                    batch: int) -> None:
    items = items_for(producer, count)
    go.wait()
    for i in range(0, count, batch):
        q.put_many(items[i:i + batch])


def consume_pipelined(q: Any) -> None:
    for item in q.consume():
        if item is None:
            q.task_done()       # else leaving the loop releases it
            return


def profiled(target: Callable[..., None], path: str) -> Callable[..., None]:
    """target run under cProfile, its figures written to path."""
    def run(*args: Any) -> None:
        import cProfile
        profile = cProfile.Profile()
        try:
            profile.runcall(target, *args)
        finally:
            profile.dump_stats(path)
    return run


def print_profiles(paths: list[str], title: str) -> None:
    import pstats
    if paths:
        print("---- %s, %d processes: the most time of their own" %
              (title, len(paths)))
        pstats.Stats(*paths, stream=sys.stdout).strip_dirs().sort_stats(
            "tottime").print_stats(12)


# ---- one timed run ----------------------------------------------------------

def run(mode: str, args: argparse.Namespace) -> float:
    """Items per second of one run of mode."""
    if mode == "stdlib":
        q = multiprocessing.JoinableQueue()
        produce, consume, extra = produce_one_by_one, consume_one_by_one, ()
    else:
        import joinq
        name = "pybench.%d.%s.%d" % (os.getpid(), mode, next(RUNS))
        q = joinq.JoinableQueue(name, host=args.host, port=args.port)
        if mode == "plain":
            produce, consume, extra = (produce_one_by_one,
                                       consume_one_by_one, ())
        else:
            produce, consume, extra = (produce_batches, consume_pipelined,
                                       (args.batch,))
    go = multiprocessing.Event()
    per = args.items // args.producers
    prof: dict[str, list[str]] = {"consumer": [], "producer": []}
    if args.profile:
        for role, n in (("consumer", args.consumers),
                        ("producer", args.producers)):
            prof[role] = [os.path.join(args.profile, "%s-%s-%d.prof"
                                       % (mode, role, i)) for i in range(n)]
    consumers = [multiprocessing.Process(
        target=profiled(consume, path) if args.profile else consume,
        args=(q,)) for path in prof["consumer"] or [None] * args.consumers]
    producers = [multiprocessing.Process(
        target=profiled(produce, path) if args.profile else produce,
        args=(q, p, per, go) + extra)
        for p, path in enumerate(prof["producer"] or
                                 [None] * args.producers)]
    for p in consumers + producers:
        p.start()
    start = time.monotonic()
    go.set()
    for p in producers:
        p.join()
    q.join()
    took = time.monotonic() - start
    for _ in consumers:
        q.put(None)
    for p in consumers + producers:
        p.join(60)
        if p.exitcode != 0:
            raise SystemExit("pyqueue: a %s process exited with %s"
                             % (mode, p.exitcode))
    if mode != "stdlib":
        stats = q.stats()
        moved = per * args.producers + args.consumers   # and the sentinels
        if (stats["puts"], stats["task_dones"], stats["unfinished"]) != \
                (moved, moved, 0):
            raise SystemExit("pyqueue: %s lost items: %r" % (mode, stats))
    for role in ("producer", "consumer"):
        print_profiles(prof[role], "%s %ss" % (mode, role))
    return per * args.producers / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7477)
    parser.add_argument("--items", type=int, default=200000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256,
                        help="items per put_many (pipelined)")
    parser.add_argument("--modes", default="stdlib,plain,pipelined")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--profile", metavar="DIR",
                        help="run each process under cProfile, its figures "
                        "in DIR, and print the summed figures of each role")
    args = parser.parse_args()
    modes = args.modes.split(",")
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    ratios: dict[str, list[float]] = {mode: [] for mode in modes}
    for rep in range(1, args.reps + 1):
        print("run %d of %d, %d items:" % (rep, args.reps, args.items))
        for mode in modes:
            rates[mode].append(run(mode, args))
            line = "  %-10s %9.0f items/s" % (mode, rates[mode][-1])
            if "stdlib" in modes and mode != "stdlib":
                ratios[mode].append(rates[mode][-1] / rates["stdlib"][-1])
                line += "  %.2fx stdlib" % ratios[mode][-1]
            print(line, flush=True)
    if args.reps > 1:
        print("median of %d runs:" % args.reps)
        for mode in modes:
            line = "  %-10s %9.0f items/s" % (mode,
                                             statistics.median(rates[mode]))
            if ratios[mode]:
                line += "  %.2fx stdlib" % statistics.median(ratios[mode])
            print(line)


if __name__ == "__main__":
    main()
