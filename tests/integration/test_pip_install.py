"""The pip install of README.md's "From Python", line for line: into a venv
of its own (under a HOME of its own), without the network (pip's
--no-index, and no pip configuration or $PIP_* of this machine), from a
copy of client/python (pip builds in the tree it is given, and the source
tree may be read-only, as under make distcheck).  The venv's Python then
imports joinq from the venv, not from the tree, every module of the tree's
package with it, at the version of the daemon it talks to once: a put,
get, task_done and join."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import jqtest

INSTALL_TIMEOUT = 120 * jqtest.SLOW   # a venv and two pip runs

CHECK = """
import importlib, importlib.metadata, json, sys
import joinq
for module in sys.argv[3:]:
    importlib.import_module(module)
q = joinq.JoinableQueue("pip.check", host=sys.argv[1], port=int(sys.argv[2]))
q.put(["from the venv", 1])
item = q.get()
q.task_done()
q.join()
print(json.dumps({"file": joinq.__file__, "item": item,
                  "version": importlib.metadata.version("joinq")}))
"""


def install_lines() -> str:
    """The README's block of install commands."""
    found = [b for b in jqtest.readme_blocks("From Python")
             if "pip install" in b]
    if len(found) != 1:
        raise AssertionError("README.md's \"From Python\" has %d blocks "
                             "with pip install, not 1" % len(found))
    return found[0]


def tree_modules() -> list[str]:
    """The modules of the tree's joinq package: joinq.aio, ..."""
    top = os.path.join(jqtest.PYTHON_CLIENT, "joinq")
    found = []
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        package = os.path.relpath(root, jqtest.PYTHON_CLIENT).replace(
            os.sep, ".")
        found += [package if f == "__init__.py" else package + "." + f[:-3]
                  for f in files if f.endswith(".py")]
    return sorted(found)


class PipInstall(jqtest.TestCase):
    def test_readme_install(self) -> None:
        lines = install_lines()
        with tempfile.TemporaryDirectory(prefix="joinq-pip-") as home:
            shutil.copytree(jqtest.PYTHON_CLIENT,
                            os.path.join(home, "client", "python"),
                            ignore=shutil.ignore_patterns(
                                "__pycache__", "build", "*.egg-info"))
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
            env.update(HOME=home, PIP_CONFIG_FILE=os.devnull)
            p = subprocess.run(["sh", "-ec", lines], cwd=home, env=env,
                               capture_output=True, text=True,
                               timeout=INSTALL_TIMEOUT)
            self.assertEqual(p.returncode, 0, "the README's install failed:"
                             "\n%s\n%s\n%s" % (lines, p.stdout, p.stderr))
            venv = os.path.join(home, ".venvs", "joinq")
            with jqtest.Daemon() as d:
                p = subprocess.run(
                    [os.path.join(venv, "bin", "python"), "-c", CHECK,
                     d.host, str(d.port)] + tree_modules(),
                    cwd="/", env=env, capture_output=True, text=True,
                    timeout=jqtest.TIMEOUT)
                self.assertEqual((p.returncode, p.stderr), (0, ""), p.stdout)
                version = d.request({"op": "ping"})["version"]
        got = json.loads(p.stdout)
        self.assertTrue(got["file"].startswith(venv + os.sep), got["file"])
        self.assertEqual(got["item"], ["from the venv", 1])
        self.assertEqual(got["version"], version,
                         "client/python/pyproject.toml's version is not the "
                         "daemon's (configure.ac)")


if __name__ == "__main__":
    jqtest.main()
