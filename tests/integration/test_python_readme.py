"""The Python programs of README.md's "From Python", as the README shows
them: the cook and eaters (multiprocessing.Process) and the pool of
workers (multiprocessing.Pool), each with only its import changed to
joinq's.  Each runs as a file of its own against a real joinqd (joinq
imported from the tree, the daemon given by $JOINQ_HOST and $JOINQ_PORT),
and again with the standard library's import put back: both runs must
print the same lines, and the daemon must have seen every item put, got
and finished.  A README edit that breaks a program fails here."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import jqtest

IMPORT = "from joinq import JoinableQueue"
STDLIB_IMPORT = "from multiprocessing import JoinableQueue"
RUN_TIMEOUT = 3 * jqtest.TIMEOUT
# Every process of a program writes its lines whole, as on a terminal:
# block-buffered, what a daemonic process printed would be lost when it is
# stopped; unbuffered, the pieces of the processes' lines would mix.
LINE_BUFFERED = """import sys
sys.stdout.reconfigure(line_buffering=True, write_through=False)
"""


def readme_program(marker: str) -> str:
    """The one program of "From Python" that holds marker."""
    found = [b for b in jqtest.readme_blocks("From Python")
             if IMPORT in b and marker in b]
    if len(found) != 1:
        raise AssertionError("README.md's \"From Python\" has %d programs "
                             "with %r and %r, not 1" % (len(found), IMPORT,
                                                        marker))
    return found[0]


def with_stdlib(program: str) -> str:
    """program with its joinq import line made the standard library's."""
    lines = program.split("\n")
    at = [i for i, line in enumerate(lines) if line.startswith(IMPORT)]
    assert len(at) == 1, "one import line of joinq, not %d" % len(at)
    lines[at[0]] = STDLIB_IMPORT
    return "\n".join(lines)


class ReadmePrograms(jqtest.TestCase):
    def run_program(self, program: str, d: jqtest.Daemon | None = None
                    ) -> list[str]:
        """Runs program as a script; its output lines, sorted.  d: the
        joinqd it talks to."""
        with tempfile.TemporaryDirectory(prefix="joinq-readme-") as tmp:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                (tmp, jqtest.PYTHON_CLIENT)))
            for name in ("JOINQ_HOST", "JOINQ_PORT", "JOINQ_TOKEN"):
                env.pop(name, None)
            if d is not None:
                env.update(JOINQ_HOST=d.host, JOINQ_PORT=str(d.port))
            with open(os.path.join(tmp, "sitecustomize.py"), "w") as f:
                f.write(LINE_BUFFERED)
            path = os.path.join(tmp, "program.py")
            with open(path, "w") as f:
                f.write(program)
            try:
                p = subprocess.run([sys.executable, path], cwd=tmp, env=env,
                                   capture_output=True, text=True,
                                   timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired as e:
                self.fail("the program did not finish within %.0f s; it "
                          "printed %r" % (RUN_TIMEOUT, e.stdout))
        self.assertEqual((p.returncode, p.stderr), (0, ""), p.stdout)
        return sorted(p.stdout.splitlines())

    def assertRan(self, marker: str, expect: list[str]) -> None:
        """The README program holding marker prints expect (in any order),
        with joinq and with the standard library, and the daemon's default
        queue saw every item put and finished."""
        program = readme_program(marker)
        self.assertEqual(self.run_program(with_stdlib(program)),
                         sorted(expect), "the standard library's run")
        with jqtest.Daemon() as d:
            self.assertEqual(self.run_program(program, d), sorted(expect),
                             "joinq's run")
            stats = d.request({"op": "stats"})["queues"]["default"]
            self.assertEqual((stats["puts"], stats["task_dones"],
                              stats["unfinished"]),
                             (len(expect), len(expect), 0), stats)

    def test_cook_and_eaters(self) -> None:
        self.assertRan("def eater(q):",
                       ["eating dish %d" % n for n in range(1, 21)])

    def test_pool_of_workers(self) -> None:
        self.assertRan("Pool(",
                       ["%d squared is %d" % (n, n * n) for n in range(100)])


if __name__ == "__main__":
    jqtest.main()
