"""tlscerts - throwaway certificates for the TLS tests (issue 14).

Made with the `openssl` command in a directory of the caller's (EC P-256
keys: a few milliseconds each).  Leaf certificates are signed with
`openssl ca`, whose -startdate and -enddate make the expired and the
not-yet-valid ones (OpenSSL 3.0's `x509` has no -not_before).

    import tlscerts
    certs = tlscerts.shared()           # made once per test process
    certs.ca, certs.server_cert, certs.server_key, ...

Every attribute is a path.  Leaf certificates get increasing serials, so a
test can tell two certificates for the same name apart (rotation).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile

OPENSSL = os.environ.get("OPENSSL", "openssl")

_CA_CNF = """\
[ca]
default_ca = jq
[jq]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[server]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $ENV::JQ_SAN
[client]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = clientAuth
"""

VALID = ("20000101000000Z", "20991231000000Z")
EXPIRED = ("20000101000000Z", "20010101000000Z")
NOT_YET = ("20990101000000Z", "21000101000000Z")


def _run(args: list[str], cwd: str, env: dict | None = None) -> None:
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([OPENSSL] + args, cwd=cwd, env=e, capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s%s"
                           % (" ".join(args), p.stdout, p.stderr))


class CA:
    """A certificate authority in a directory of its own (its index and
    serial files are openssl ca's)."""

    def __init__(self, directory: str, name: str, serial: int):
        self.dir = os.path.join(directory, name)
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "ca.cnf"), "w") as f:
            f.write(_CA_CNF)
        open(os.path.join(self.dir, "index.txt"), "w").close()
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("%x\n" % serial)
        self.cert = os.path.join(self.dir, "ca.crt")
        self.key = os.path.join(self.dir, "ca.key")
        _run(["req", "-x509", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.key,
              "-out", self.cert, "-subj", "/CN=joinq test " + name,
              "-days", "3650"], self.dir)

    def issue(self, name: str, cn: str, kind: str = "server",
              san: str | None = None,
              dates: tuple[str, str] = VALID) -> tuple[str, str]:
        """A new key and a certificate for cn signed by this CA: (cert
        path, key path).  kind is "server" (SAN san, by default DNS:cn) or
        "client"."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".crt")
        _run(["req", "-new", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out",
              csr, "-subj", "/CN=" + cn], self.dir)
        _run(["ca", "-batch", "-config", "ca.cnf", "-cert", self.cert,
              "-keyfile", self.key, "-in", csr, "-out", cert, "-notext",
              "-startdate", dates[0], "-enddate", dates[1],
              "-extensions", kind], self.dir,
             {"JQ_SAN": san or "DNS:" + cn})
        return cert, key


class Certs:
    """The set the TLS tests use, made in directory:

    ca                          the CA the daemon's clients trust
    server_cert, server_key     localhost and IP 127.0.0.1, valid
    client_cert, client_key     a client certificate signed by ca
    expired_cert, expired_key   localhost, expired in 2001
    future_cert, future_key     localhost, valid from 2099
    other_cert, other_key       for other.example only (wrong name)
    other_ca                    an unrelated CA
    stranger_cert, stranger_key a client certificate signed by other_ca
    """

    LOCAL_SAN = "DNS:localhost,IP:127.0.0.1"

    def __init__(self, directory: str):
        self.dir = directory
        self.authority = CA(directory, "ca", 0x1000)
        self.ca = self.authority.cert
        self.server_cert, self.server_key = self.server("server")
        self.client_cert, self.client_key = self.authority.issue(
            "client", "joinq client", "client")
        self.expired_cert, self.expired_key = self.server("expired", EXPIRED)
        self.future_cert, self.future_key = self.server("future", NOT_YET)
        self.other_cert, self.other_key = self.authority.issue(
            "other", "other.example")
        self.other_authority = CA(directory, "otherca", 0x2000)
        self.other_ca = self.other_authority.cert
        self.stranger_cert, self.stranger_key = self.other_authority.issue(
            "stranger", "joinq stranger", "client")

    def server(self, name: str,
               dates: tuple[str, str] = VALID) -> tuple[str, str]:
        """Another server certificate for localhost and 127.0.0.1 from ca
        (a new key, the next serial): (cert path, key path)."""
        return self.authority.issue(name, "localhost", "server",
                                    self.LOCAL_SAN, dates)


_shared: list[Certs] = []


def shared() -> Certs:
    """The Certs of this test process, made on first use in a temporary
    directory removed at exit."""
    if not _shared:
        directory = tempfile.mkdtemp(prefix="joinq-certs-")
        atexit.register(shutil.rmtree, directory, True)
        _shared.append(Certs(directory))
    return _shared[0]


def serial_of(cert_path: str) -> int:
    """The serial number of the PEM certificate at cert_path."""
    p = subprocess.run([OPENSSL, "x509", "-in", cert_path, "-noout",
                        "-serial"], capture_output=True, text=True,
                       timeout=60, check=True)
    return int(p.stdout.strip().split("=", 1)[1], 16)


def serial_of_der(der: bytes) -> int:
    """The serial number of a DER certificate (ssl's getpeercert(True))."""
    p = subprocess.run([OPENSSL, "x509", "-inform", "DER", "-noout",
                        "-serial"], input=der, capture_output=True,
                       timeout=60, check=True)
    return int(p.stdout.decode().strip().split("=", 1)[1], 16)
