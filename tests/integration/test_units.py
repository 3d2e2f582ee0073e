"""The systemd units (conf/joinqd.service.in, conf/joinqd.socket) and the
manual pages (doc/*.[158]).

The units are checked as systemd would read them: `systemd-analyze verify`
must have nothing to say of them (their Documentation= pages included, found
through MANPATH), and `systemd-analyze security --offline=true` must rate
the service's exposure 2.0 or lower.  A machine without systemd-analyze,
man or groff fails these tests: scripts/deps installs them.

    JOINQ_BUILDDIR=$PWD JOINQ_SRCDIR=$PWD JOINQD=daemon/joinqd \\
        python3 tests/integration/test_units.py
"""
import os
import re
import shutil
import subprocess
import tempfile

import jqtest

SRCDIR = os.environ.get("JOINQ_SRCDIR", ".")
BUILDDIR = os.environ.get("JOINQ_BUILDDIR", ".")
SERVICE = os.path.join(BUILDDIR, "conf", "joinqd.service")
SERVICE_IN = os.path.join(SRCDIR, "conf", "joinqd.service.in")
SOCKET = os.path.join(SRCDIR, "conf", "joinqd.socket")
MANPAGES = [os.path.join(SRCDIR, "doc", name)
            for name in ("joinq.1", "joinqd.conf.5", "joinqd.8")]
MAX_EXPOSURE = 2.0
# The open files max_connections (10000) needs, as joinqd counts them.
NOFILE_NEEDED = 10000 + 64


def tool(name):
    """The path of a program the tests need; fails the test without it."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError("%s is missing: scripts/deps installs it "
                             "(the systemd, man-db and groff-base packages)"
                             % name)
    return path


def run(argv, env=None, timeout=6 * jqtest.TIMEOUT):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, env=e,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def read_unit(path):
    """A unit file as {section: [(key, value), ...]}, the way systemd reads
    it: comments and blank lines skipped, backslash-newline continued, keys
    repeatable."""
    sections, section, pending = {}, None, ""
    with open(path) as f:
        for raw in f:
            line = pending + raw.rstrip("\n")
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                sections.setdefault(section, [])
                continue
            key, sep, value = line.partition("=")
            if not sep or section is None:
                raise AssertionError("%s: not a unit file line: %r"
                                     % (path, line))
            sections[section].append((key.strip(), value.strip()))
    return sections


def values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def last(unit, section, key):
    found = values(unit, section, key)
    return found[-1] if found else None


class UnitFiles(jqtest.TestCase):
    """What the units must say, read from the files."""

    def setUp(self):
        self.assertTrue(os.path.exists(SERVICE),
                        "%s is not built (make builds it from %s)"
                        % (SERVICE, SERVICE_IN))
        self.service = read_unit(SERVICE)
        self.socket = read_unit(SOCKET)

    def test_service_is_notify_with_watchdog_and_reload(self):
        s = self.service
        self.assertEqual(last(s, "Service", "Type"), "notify")
        watchdog = last(s, "Service", "WatchdogSec")
        self.assertTrue(watchdog and watchdog not in ("0", "infinity"),
                        "WatchdogSec=%r" % watchdog)
        self.assertEqual(last(s, "Service", "ExecReload"),
                         "/bin/kill -HUP $MAINPID")
        self.assertEqual(last(s, "Service", "Restart"), "on-failure")

    def test_service_runs_the_installed_daemon_with_the_installed_config(self):
        with open(SERVICE) as f:
            text = f.read()
        self.assertNotRegex(text, r"@[a-z_]+@", "a path was not substituted")
        start = last(self.service, "Service", "ExecStart")
        argv = start.split()
        self.assertTrue(os.path.isabs(argv[0]), start)
        self.assertEqual(os.path.basename(argv[0]), "joinqd", start)
        self.assertEqual(argv[1], "-c", start)
        self.assertTrue(argv[2].endswith("/joinq/joinqd.conf"), start)
        self.assertTrue(os.path.isabs(argv[2]), start)
        self.assertIn("man:joinqd(8)",
                      " ".join(values(self.service, "Unit", "Documentation")))

    def test_service_user_and_state(self):
        s = self.service
        self.assertEqual(last(s, "Service", "DynamicUser"), "yes")
        self.assertEqual(last(s, "Service", "StateDirectory"), "joinq")
        self.assertEqual(last(s, "Service", "CapabilityBoundingSet"), "")
        families = set(" ".join(values(s, "Service",
                                       "RestrictAddressFamilies")).split())
        self.assertEqual(families, {"AF_INET", "AF_INET6", "AF_UNIX"})

    def test_open_file_limit_fits_max_connections(self):
        limit = last(self.service, "Service", "LimitNOFILE")
        self.assertIsNotNone(limit, "no LimitNOFILE=")
        soft, _, hard = limit.partition(":")
        for value in (soft, hard or soft):
            self.assertTrue(value == "infinity" or
                            int(value) >= NOFILE_NEEDED,
                            "LimitNOFILE=%s: max_connections 10000 needs %d"
                            % (limit, NOFILE_NEEDED))

    def test_every_hardening_line_says_why(self):
        """Each setting of [Service] after the first comment line has a
        comment above it, alone or in a commented group."""
        with open(SERVICE_IN) as f:
            lines = f.read().splitlines()
        start = lines.index("[Service]")
        end = lines.index("[Install]")
        commented = False
        for line in lines[start + 1:end]:
            if line.startswith("#"):
                commented = True
            elif not line.strip():
                commented = False
            else:
                self.assertTrue(commented, "no comment says why: " + line)

    def test_socket_serves_tcp_and_udp_7477_on_loopback(self):
        s = self.socket
        streams = values(s, "Socket", "ListenStream")
        datagrams = values(s, "Socket", "ListenDatagram")
        for addrs in (streams, datagrams):
            self.assertEqual(sorted(addrs), ["127.0.0.1:7477", "[::1]:7477"])
        name = last(s, "Socket", "FileDescriptorName")
        self.assertTrue(name, "no FileDescriptorName=")
        self.assertNotEqual(name, "metrics",
                            "joinqd takes a socket named metrics as its "
                            "metrics listener")
        self.assertIsNone(last(s, "Socket", "Accept"))   # Accept=no: one joinqd
        self.assertIn("man:joinqd(8)",
                      " ".join(values(s, "Unit", "Documentation")))


class SystemdAnalyze(jqtest.TestCase):
    """systemd's own judgement of the units."""

    def test_verify_reports_nothing(self):
        """The units as installed, but for ExecStart, which names the
        daemon just built (verify wants an executable there), with the
        manual pages where man finds them."""
        analyze = tool("systemd-analyze")
        tool("man")
        daemon = os.path.abspath(jqtest.JOINQD)
        self.assertTrue(os.access(daemon, os.X_OK), daemon)
        with tempfile.TemporaryDirectory(prefix="joinq-units-") as tmp:
            units = os.path.join(tmp, "units")
            os.mkdir(units)
            with open(SERVICE) as f:
                text = f.read()
            text, n = re.subn(r"(?m)^ExecStart=\S+", "ExecStart=" + daemon,
                              text)
            self.assertEqual(n, 1)
            with open(os.path.join(units, "joinqd.service"), "w") as f:
                f.write(text)
            shutil.copy(SOCKET, units)
            man = os.path.join(tmp, "man")
            for page in MANPAGES:
                section = os.path.join(man, "man" + page.rsplit(".", 1)[1])
                os.makedirs(section, exist_ok=True)
                shutil.copy(page, section)
            p = run([analyze, "verify",
                     os.path.join(units, "joinqd.service"),
                     os.path.join(units, "joinqd.socket")],
                    env={"MANPATH": man, "SYSTEMD_LOG_LEVEL": "notice"})
            self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""))

    def test_security_exposure_at_most_2(self):
        analyze = tool("systemd-analyze")
        p = run([analyze, "security", "--offline=true", "--no-pager", SERVICE])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        m = re.search(r"Overall exposure level for joinqd\.service: "
                      r"(\d+(?:\.\d+)?)", p.stdout)
        self.assertTrue(m, "no overall exposure line:\n" + p.stdout + p.stderr)
        score = float(m.group(1))
        self.assertLessEqual(score, MAX_EXPOSURE, p.stdout)


class ManPages(jqtest.TestCase):
    """Every page renders with man, and groff has no warning about it."""

    def test_man_renders_each_page(self):
        man = tool("man")
        for page in MANPAGES:
            with self.subTest(page=os.path.basename(page)):
                p = run([man, "--warnings", "-l", page],
                        env={"MANWIDTH": "80", "MANPAGER": "cat",
                             "PAGER": "cat", "LC_ALL": "C.UTF-8"})
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stderr, "")
                self.assertIn("NAME", p.stdout)
                self.assertIn("SEE ALSO", p.stdout)

    def test_groff_reports_no_warnings(self):
        groff = tool("groff")
        for page in MANPAGES:
            with self.subTest(page=os.path.basename(page)):
                p = run([groff, "-man", "-ww", "-z", page])
                self.assertEqual((p.returncode, p.stderr), (0, ""))

    def test_every_option_of_the_help_texts_is_documented(self):
        """Each long option joinqd --help and joinq [COMMAND] --help show
        appears in the matching page."""
        pages = {}
        for page in MANPAGES:
            p = run([tool("groff"), "-man", "-Tascii", "-P-cbou", page])
            pages[os.path.basename(page)] = p.stdout.replace("\u2010", "-")
        helps = [("joinqd.8", [jqtest.JOINQD, "--help"])]
        helps.append(("joinq.1", [jqtest.JOINQ, "--help"]))
        for cmd in ("put", "get", "task_done", "release", "join", "qsize",
                    "empty", "full", "stats", "ping", "work",
                    "bench"):
            helps.append(("joinq.1", [jqtest.JOINQ, cmd, "--help"]))
        for page, argv in helps:
            p = run(argv)
            with self.subTest(help=" ".join(argv[1:])):
                self.assertEqual(p.returncode, 0, p.stderr)
                for option in sorted(set(re.findall(r"--[a-z][a-z-]+",
                                                    p.stdout))):
                    self.assertIn(option, pages[page])
        self.assertIn("--metrics-listen", pages["joinqd.8"])


if __name__ == "__main__":
    jqtest.main()
