"""Helpers for the end-to-end tests of the TLS edge tier (``tls-edge``).

Builds on ``e2e_lib`` (processes, ports, manifests, echo-backend, router). Adds:

* :class:`Pki` - a throw-away CA and leaf certificates made with the ``openssl`` CLI
  (ECDSA P-256 PKCS#8/SEC1, RSA 2048 PKCS#1/PKCS#8, Ed25519, wildcards, expired ones);
* manifests for ``kubernetes.io/tls`` Secrets and ``tandem-edge`` Ingresses;
* :class:`Edge` - a running ``tls-edge`` (ports, manifest dir, logs) and :func:`start_edge`;
* TLS probes: ``openssl s_client`` runs, python ``ssl`` handshakes, an HTTPS ``curl``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pytest

from e2e_lib import (LOOPBACK, STARTUP_TIMEOUT, Env, Response, Router, _Fatal, _parse_header_dump,
                     free_port, ingress, port_open, require_binary, to_yaml, wait_until)

EDGE_CLASS = "tandem-edge"
SELF_SIGNED_CN = "rcgen self signed cert"
SELF_SIGNED_SAN = "tandem-default.invalid"


def run(argv: list[str], *, input: bytes | None = None, timeout: float = 30.0,
        check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} -> exit {proc.returncode}\n"
                           f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}")
    return proc


# --------------------------------------------------------------------------- PKI


@dataclass
class Cert:
    name: str
    cn: str
    hosts: list[str]
    key_type: str
    cert_pem: str
    key_pem: str
    serial: str             # upper-case hex, as `openssl x509 -serial` prints it
    fingerprint: str        # sha256 of the DER certificate, hex

    @property
    def key_body(self) -> str:
        """The base64 body of the private key PEM (what must never reach a log)."""
        return "".join(l for l in self.key_pem.splitlines() if l and not l.startswith("-----"))


def der_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(pem: str) -> str:
    return der_fingerprint(ssl.PEM_cert_to_DER_cert(pem))


KEY_HEADERS = {
    "ec": "BEGIN PRIVATE KEY",            # ECDSA P-256, PKCS#8
    "ec-sec1": "BEGIN EC PRIVATE KEY",    # ECDSA P-256, SEC1
    "ec384": "BEGIN PRIVATE KEY",         # ECDSA P-384, PKCS#8
    "rsa-pkcs8": "BEGIN PRIVATE KEY",     # RSA 2048, PKCS#8
    "rsa-pkcs1": "BEGIN RSA PRIVATE KEY",  # RSA 2048, PKCS#1
    "ed25519": "BEGIN PRIVATE KEY",       # Ed25519, PKCS#8
}


class Pki:
    """A CA (ECDSA P-256) under ``work_dir`` that signs leaf certificates."""

    def __init__(self, work_dir: Path, ca_cn: str = "tandem e2e test CA"):
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = self.dir / "ca.key"
        self.ca_crt = self.dir / "ca.crt"
        self._serial = int(time.time() * 1000) & 0xFFFFFFFFFF
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "30", "-subj", f"/CN={ca_cn}", "-keyout", str(self.ca_key), "-out", str(self.ca_crt),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])

    @property
    def ca_path(self) -> str:
        return str(self.ca_crt)

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _key(self, path: Path, key_type: str) -> str:
        if key_type in ("ec", "ec-sec1"):
            run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)])
        elif key_type == "ec384":
            run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", str(path)])
        elif key_type in ("rsa-pkcs8", "rsa-pkcs1"):
            run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path)])
        elif key_type == "ed25519":
            run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", str(path)])
        else:
            raise ValueError(key_type)
        if key_type == "ec-sec1":
            run(["openssl", "ec", "-in", str(path), "-out", str(path)])
        elif key_type == "rsa-pkcs1":
            run(["openssl", "rsa", "-traditional", "-in", str(path), "-out", str(path)])
        pem = path.read_text()
        want = KEY_HEADERS[key_type]
        assert f"-----{want}-----" in pem, f"{key_type} key is not in the intended form ({want}):\n{pem[:60]}"
        return pem

    def leaf(self, name: str, hosts: Iterable[str], *, key_type: str = "ec", cn: str | None = None,
             days: int = 30, expired: bool = False) -> Cert:
        """A leaf certificate for ``hosts`` (SAN DNS names) signed by the CA.

        ``expired=True`` gives validity 2020-01-01..2020-02-01 (made with ``openssl ca``,
        since openssl 3.0's ``x509 -req`` cannot set dates in the past).
        """
        hosts = list(hosts)
        cn = cn or (hosts[0] if hosts else name)
        d = self.dir / name
        d.mkdir(parents=True, exist_ok=True)
        key_path, csr, crt, ext = d / "tls.key", d / "tls.csr", d / "tls.crt", d / "ext.cnf"
        key_pem = self._key(key_path, key_type)
        run(["openssl", "req", "-new", "-key", str(key_path), "-subj", f"/CN={cn}", "-out", str(csr)])
        san = ",".join(f"DNS:{h}" for h in hosts)
        ext_lines = ["basicConstraints=CA:FALSE", "extendedKeyUsage=serverAuth"]
        if san:
            ext_lines.insert(0, f"subjectAltName={san}")
        ext.write_text("\n".join(ext_lines) + "\n")
        serial = self.next_serial()
        if expired:
            db = d / "ca-db"
            (db / "new").mkdir(parents=True, exist_ok=True)
            (db / "index.txt").write_text("")
            hexs = f"{serial:X}"
            (db / "serial").write_text(("0" + hexs if len(hexs) % 2 else hexs) + "\n")
            cfg = d / "ca.cnf"
            cfg.write_text(
                "[ca]\ndefault_ca=cadef\n[cadef]\n"
                f"database={db}/index.txt\nnew_certs_dir={db}/new\nserial={db}/serial\n"
                "default_md=sha256\npolicy=pol\nunique_subject=no\nemail_in_dn=no\n"
                "[pol]\ncommonName=supplied\n")
            run(["openssl", "ca", "-batch", "-notext", "-config", str(cfg), "-cert", str(self.ca_crt),
                 "-keyfile", str(self.ca_key), "-in", str(csr), "-out", str(crt),
                 "-startdate", "20200101000000Z", "-enddate", "20200201000000Z", "-extfile", str(ext)])
        else:
            run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.ca_crt), "-CAkey", str(self.ca_key),
                 "-set_serial", str(serial), "-days", str(days), "-extfile", str(ext), "-out", str(crt)])
        cert_pem = crt.read_text()
        info = cert_info(cert_pem)
        return Cert(name=name, cn=cn, hosts=hosts, key_type=key_type, cert_pem=cert_pem, key_pem=key_pem,
                    serial=info["serial"], fingerprint=pem_fingerprint(cert_pem))


def cert_info(pem: str) -> dict:
    """Subject CN, SAN DNS names, serial (hex) and sha256 fingerprint of a PEM certificate."""
    out = run(["openssl", "x509", "-noout", "-subject", "-serial", "-enddate", "-ext", "subjectAltName",
               "-nameopt", "RFC2253"], input=pem.encode()).stdout.decode()
    cn = re.search(r"^subject=.*?CN=([^,\n]*)", out, re.M)
    serial = re.search(r"^serial=([0-9A-Fa-f]+)", out, re.M)
    return {
        "cn": cn.group(1) if cn else None,
        "sans": re.findall(r"DNS:([^,\s]+)", out),
        "serial": serial.group(1).upper() if serial else None,
        "not_after": (re.search(r"^notAfter=(.*)$", out, re.M) or [None, None])[1],
        "fingerprint": pem_fingerprint(pem),
    }


# --------------------------------------------------------------------------- manifests


def tls_secret(name: str, cert_pem: str, key_pem: str, *, namespace: str = "default",
               encoding: str = "data", type_: str = "kubernetes.io/tls") -> dict:
    meta = {"name": name, "namespace": namespace}
    doc: dict = {"apiVersion": "v1", "kind": "Secret", "type": type_, "metadata": meta}
    if encoding == "data":
        doc["data"] = {"tls.crt": base64.b64encode(cert_pem.encode()).decode(),
                       "tls.key": base64.b64encode(key_pem.encode()).decode()}
    elif encoding == "stringData":
        doc["stringData"] = {"tls.crt": cert_pem, "tls.key": key_pem}
    else:
        raise ValueError(encoding)
    return doc


def cert_secret(name: str, cert: Cert, **kw) -> dict:
    return tls_secret(name, cert.cert_pem, cert.key_pem, **kw)


def edge_ingress(name: str, tls: Iterable[tuple[Iterable[str], str | None]], service: str,
                 port: int | str = 80, *, rule_hosts: Iterable[str] | None = None,
                 namespace: str = "default", annotations: dict | None = None,
                 class_name: str = EDGE_CLASS) -> dict:
    """An edge Ingress: ``tls`` is [(hosts, secretName)], each rule host sends ``/`` to ``service``.

    ``rule_hosts`` defaults to every TLS host; wildcard hosts are valid rule hosts too.
    """
    tls = [(list(h), s) for h, s in tls]
    if rule_hosts is None:
        rule_hosts = [h for hosts, _ in tls for h in hosts]
    p = {"number": port} if isinstance(port, int) else {"name": port}
    rules = [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                             "backend": {"service": {"name": service, "port": p}}}]}}
             for h in rule_hosts]
    doc = ingress(name, rules, namespace=namespace, class_name=class_name, annotations=annotations)
    entries = []
    for hosts, secret in tls:
        e: dict = {"hosts": hosts}
        if secret is not None:
            e["secretName"] = secret
        entries.append(e)
    doc["spec"]["tls"] = entries
    return doc


# --------------------------------------------------------------------------- the edge process


class Edge(Router):
    """A running ``tls-edge``; reuses :class:`e2e_lib.Router`'s manifest/log/admin helpers
    (``http_port`` is the plain-HTTP listener, ``https_port`` the TLS one)."""

    def __init__(self, env: Env, manifests_dir: Path, args: list[str], name: str):  # noqa: D107
        self.env = env
        self.manifests_dir = manifests_dir
        self.https_port = free_port()
        self.http_port = free_port()
        self.admin_port = free_port()
        self.name = name
        argv = [str(require_binary("tls-edge")), "--manifests", str(manifests_dir),
                "--https-listen", f"{LOOPBACK}:{self.https_port}",
                "--http-listen", f"{LOOPBACK}:{self.http_port}",
                "--admin-listen", f"{LOOPBACK}:{self.admin_port}",
                # "{https_port}" / "{http_port}" in an argument stand for this edge's own ports
                *(a.replace("{https_port}", str(self.https_port)).replace("{http_port}", str(self.http_port))
                  for a in args)]
        self.proc = env.spawn(name, argv)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        def ready():
            if not self.proc.alive():
                raise _Fatal(f"tls-edge exited early\n{self.proc.describe()}")
            return self.admin_status("/readyz") == 200

        try:
            wait_until(ready, timeout, interval=0.05, desc="tls-edge /readyz == 200")
        except _Fatal as e:
            pytest.fail(str(e))
        except AssertionError as e:
            pytest.fail(f"{e}\n{self.proc.describe()}")
        wait_until(lambda: port_open(self.https_port) and port_open(self.http_port), 10,
                   desc="tls-edge listeners accepting")

    def write_secret(self, filename: str, doc: dict) -> float:
        return self.write(filename, doc)

    def https_url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.https_port}{path}"


def start_edge(env: Env, manifests: dict[str, Any] | None = None, args: Iterable[str] = (), *,
               wait_ready: bool = True, name: str = "tls-edge") -> Edge:
    mdir = env.work_dir / env._unique(f"manifests-{name}")
    mdir.mkdir(parents=True)
    for fname, docs in (manifests or {}).items():
        p = mdir / fname
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(to_yaml(docs))
    e = Edge(env, mdir, list(args), env._unique(name))
    if wait_ready:
        e.wait_ready()
    return e


# --------------------------------------------------------------------------- TLS probes


@dataclass
class SClient:
    """One ``openssl s_client`` run."""
    rc: int
    out: str
    leaf_pem: str | None
    chain_pems: list[str] = field(default_factory=list)

    @property
    def leaf(self) -> dict:
        assert self.leaf_pem, f"no certificate in s_client output:\n{self.out[-2000:]}"
        return cert_info(self.leaf_pem)

    @property
    def protocol(self) -> str | None:
        m = re.search(r"^\s*Protocol\s*:\s*(\S+)", self.out, re.M) or re.search(r"New, (TLSv[\d.]+),", self.out)
        return m.group(1) if m else None

    @property
    def alpn(self) -> str | None:
        m = re.search(r"^ALPN protocol: (\S+)", self.out, re.M)
        return m.group(1) if m else None

    @property
    def handshake_ok(self) -> bool:
        return bool(re.search(r"^(New|Reused), TLSv", self.out, re.M)) and "Cipher is (NONE)" not in self.out


def s_client(port: int, servername: str | None, *extra: str, stdin: bytes = b"",
             timeout: float = 20.0) -> SClient:
    argv = ["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", "-showcerts"]
    argv += ["-servername", servername] if servername is not None else ["-noservername"]
    argv += list(extra)
    proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    out = proc.stdout.decode(errors="replace") + "\n" + proc.stderr.decode(errors="replace")
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    return SClient(proc.returncode, out, pems[0] + "\n" if pems else None, [p + "\n" for p in pems])


def client_context(cafile: str | None = None, *, alpn: list[str] | None = None,
                   verify: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile) if verify else ssl._create_unverified_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def peer_cert(port: int, sni: str | None, *, timeout: float = 5.0,
              source: str | None = None) -> bytes:
    """DER leaf certificate the server presents for ``sni`` (no verification)."""
    ctx = client_context(verify=False)
    with socket.create_connection((LOOPBACK, port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            return tls.getpeercert(binary_form=True)


def peer_fingerprint(port: int, sni: str | None, **kw) -> str:
    return der_fingerprint(peer_cert(port, sni, **kw))


def wait_fingerprint(port: int, sni: str | None, fingerprint: str, timeout: float = 10.0) -> float:
    """Poll new handshakes until ``sni`` is served the certificate ``fingerprint``; return seconds."""
    t0 = time.monotonic()
    wait_until(lambda: peer_fingerprint(port, sni) == fingerprint, timeout, interval=0.02,
               desc=f"certificate {fingerprint[:12]} served for SNI {sni}")
    return time.monotonic() - t0


def curl_https(edge_or_port: Edge | int, host: str, path: str = "/", *, cacert: str | None,
               http2: bool = False, headers: Iterable[tuple[str, str]] | dict | None = None,
               interface: str | None = None, method: str | None = None, data: bytes | None = None,
               timeout: float = 15.0, extra: Iterable[str] = (), check: bool = True) -> Response:
    """curl over real TLS with ``--resolve host:port:127.0.0.1`` (SNI = host) and ``--cacert``.

    ``http2=True`` offers h2 via ALPN (``--http2``); else ``--http1.1``. With ``check=False``
    a curl failure returns Response(status=-exit_code, body=stderr) instead of raising.
    """
    port = edge_or_port.https_port if isinstance(edge_or_port, Edge) else edge_or_port
    if isinstance(headers, dict):
        headers = list(headers.items())
    with tempfile.TemporaryDirectory(prefix="tandem-curl-") as td:
        hdr_file, body_file = os.path.join(td, "h"), os.path.join(td, "b")
        argv = ["curl", "-sS", "--max-time", str(timeout), "-D", hdr_file, "-o", body_file,
                "-w", "%{http_code} %{http_version}", "--noproxy", "*",
                "--resolve", f"{host}:{port}:{LOOPBACK}", "--http2" if http2 else "--http1.1"]
        if cacert:
            argv += ["--cacert", cacert]
        if interface:
            argv += ["--interface", interface]
        if method:
            argv += ["-X", method]
        for k, v in headers or ():
            argv += ["-H", f"{k}: {v}"]
        if data is not None:
            argv += ["--data-binary", "@-"]
        argv += list(extra)
        argv.append(f"https://{host}:{port}{path}")
        proc = subprocess.run(argv, input=data, capture_output=True, timeout=timeout + 10)
        if proc.returncode != 0:
            if check:
                raise RuntimeError(f"curl exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}"
                                   f" ({' '.join(argv)})")
            return Response(-proc.returncode, [], proc.stderr, "")
        code, _, version = proc.stdout.decode().strip().partition(" ")
        raw = Path(hdr_file).read_text(errors="replace") if os.path.exists(hdr_file) else ""
        _, hdrs = _parse_header_dump(raw)
        body = Path(body_file).read_bytes() if os.path.exists(body_file) else b""
        return Response(int(code), hdrs, body, version)


def assert_no_key_material(text: str, certs: Iterable[Cert], where: str = "logs") -> None:
    """No private key of ``certs`` appears in ``text``: neither any 40-char piece of its PEM
    body nor of the base64 of the whole PEM (the form a Secret's ``data`` holds)."""
    for c in certs:
        body = c.key_body
        data_b64 = base64.b64encode(c.key_pem.encode()).decode()
        for label, blob in (("PEM body", body), ("Secret data base64", data_b64)):
            for i in range(0, max(1, len(blob) - 40), 20):
                piece = blob[i:i + 40]
                assert piece not in text, f"{where} contain key material of {c.name} ({label}): {piece!r}"
        assert "PRIVATE KEY" not in text, f"{where} mention a PRIVATE KEY PEM block"


@contextlib.contextmanager
def tls_connection(port: int, sni: str, cafile: str, *, timeout: float = 5.0, source: str | None = None,
                   alpn: list[str] | None = None):
    ctx = client_context(cafile, alpn=alpn)
    raw = socket.create_connection((LOOPBACK, port), timeout=timeout,
                                   source_address=(source, 0) if source else None)
    try:
        tls = ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise
    try:
        yield tls
    finally:
        tls.close()


# --------------------------------------------------------------------------- logs


def log_mark(edge: Edge) -> int:
    """Number of log lines so far: pass to :func:`wait_log_all` to only look at newer lines."""
    return len(edge.proc.log_lines())


def wait_log_all(edge: Edge, *needles: str, since: int = 0, timeout: float = 10.0) -> str:
    """Wait for one log line (after line ``since``) that contains every needle; return it."""
    def find():
        for line in edge.proc.log_lines()[since:]:
            if all(n in line for n in needles):
                return line
        return None

    try:
        return wait_until(find, timeout, interval=0.05, desc=f"a tls-edge log line containing {needles}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- log since mark ---\n"
                             + "\n".join(edge.proc.log_lines()[since:][-30:])) from None


# --------------------------------------------------------------------------- HTTPS with http.client



class SniHTTPSConnection(http.client.HTTPSConnection):
    """http.client over TLS to 127.0.0.1:port with SNI (and Host) = ``sni``; optional
    ``source`` address for the client side."""

    def __init__(self, sni: str, port: int, context: ssl.SSLContext, *, timeout: float = 5.0,
                 source: str | None = None):
        super().__init__(sni, port, context=context, timeout=timeout,
                         source_address=(source, 0) if source else None)
        self.handshake_done_at: float | None = None

    def connect(self):  # noqa: D102
        raw = socket.create_connection((LOOPBACK, self.port), self.timeout, self.source_address)
        try:
            self.sock = self._context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        self.handshake_done_at = time.monotonic()

    def peer_fingerprint(self) -> str:
        return der_fingerprint(self.sock.getpeercert(binary_form=True))

    def get(self, path: str = "/", headers: dict | None = None) -> tuple[int, bytes]:
        self.request("GET", path, headers=headers or {})
        r = self.getresponse()
        return r.status, r.read()

