"""TLS edge: session resumption. By default a client resumes by session ticket (stateless, TLS
1.3 and 1.2); with ``--tls-session-tickets=false`` no ticket is issued and resumption is by the
server's session cache only (TLS 1.2 session ID, TLS 1.3 short stateful ticket); with the cache
size 0 as well, nothing resumes. Real clients: Python ``ssl`` with ``session=`` and
``openssl s_client -sess_out/-sess_in``. Certificate changes still reach new handshakes, and a
resumed connection is held to the names of the certificate its SNI gets now.
"""

from __future__ import annotations

import re
import socket
import ssl

import pytest

from e2e_lib import LOOPBACK, backend_objects
from edge_support import (Pki, cert_secret, client_context, edge_ingress, peer_fingerprint, run,
                          s_client, start_edge, wait_fingerprint)

HOST = "resume.example.com"
ALIAS = "alias.example.com"
VERSIONS = {"TLSv1.3": ssl.TLSVersion.TLSv1_3, "TLSv1.2": ssl.TLSVersion.TLSv1_2}
S_CLIENT_VERSION = {"TLSv1.3": "-tls1_3", "TLSv1.2": "-tls1_2"}
# rustls' stateful TLS 1.3 ticket is the 32-byte session ID; a stateless one is the sealed session
# (key name, nonce, encrypted state, tag): well over 64 bytes.
STATEFUL_TICKET_LEN = 32


@pytest.fixture(scope="module")
def pki(module_env):
    return Pki(module_env.work_dir / "pki")


@pytest.fixture(scope="module")
def cert(pki):
    return pki.leaf("resume", [HOST])


@pytest.fixture(scope="module")
def manifests(module_env, cert):
    echo = module_env.echo("echo", "echo-1")
    return {
        "backend.yaml": backend_objects("echo", [echo]),
        "secret.yaml": cert_secret("resume-tls", cert),
        "ingress.yaml": edge_ingress("edge", [([HOST], "resume-tls")], "echo", 80),
    }


@pytest.fixture(scope="module")
def edge(module_env, manifests):
    return start_edge(module_env, manifests, name="edge-resume-default")


@pytest.fixture(scope="module")
def edge_no_tickets(module_env, manifests):
    return start_edge(module_env, manifests, ["--tls-session-tickets=false"], name="edge-no-tickets")


@pytest.fixture(scope="module")
def edge_no_resumption(module_env, manifests):
    return start_edge(module_env, manifests, ["--tls-session-tickets=false", "--tls-session-cache-size", "0"],
                      name="edge-no-resumption")


def get(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None, host: str = HOST):
    """One HTTPS GET on a new connection (optionally resuming ``session``): (status line,
    session_reused, version, the session to resume next time)."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST, session=session) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            # The TLS 1.3 tickets come after the handshake: read first, then take the session.
            return data.split(b"\r\n", 1)[0].decode(), tls.session_reused, tls.version(), tls.session


def context(ca: str, version: str) -> ssl.SSLContext:
    ctx = client_context(ca)
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    return ctx


def sess_ticket_len(sess_file) -> int | None:
    """Length in bytes of the session ticket in an ``-sess_out`` file (None without one)."""
    out = run(["openssl", "sess_id", "-in", str(sess_file), "-noout", "-text"]).stdout.decode()
    m = re.search(r"TLS session ticket:\n((?:\s+[0-9a-f]{4} - .*\n)+)", out)
    if not m:
        return None
    return sum(len(re.findall(r"\b[0-9a-f]{2}\b", line.split(" - ", 1)[1][:48])) for line in m.group(1).splitlines())


def s_client_twice(edge, version: str, tmp_path, pki):
    """A full handshake saving the session, then one offering it: (first run, second run, ticket
    length in the saved session); no second run when there was no session to save."""
    sess = tmp_path / f"sess-{version}.pem"
    # -ign_eof: read until the server closes (after the response), so the TLS 1.3 tickets, which
    # follow the handshake, are in before s_client writes the session out
    common = ["-CAfile", pki.ca_path, "-verify_return_error", "-ign_eof", S_CLIENT_VERSION[version]]
    first = s_client(edge.https_port, HOST, *common, "-sess_out", str(sess),
                     stdin=f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    assert first.handshake_ok, first.out[-1500:]
    if not sess.exists():  # s_client writes no session the server gave nothing to resume with
        return first, None, None
    second = s_client(edge.https_port, HOST, *common, "-sess_in", str(sess),
                      stdin=f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    assert second.handshake_ok, second.out[-1500:]
    return first, second, sess_ticket_len(sess)


# --------------------------------------------------------------------------- on by default


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_python_client_resumes_by_ticket(edge, pki, version):
    ctx = context(pki.ca_path, version)
    status, reused, got, session = get(edge.https_port, ctx)
    assert status == "HTTP/1.1 200 OK" and not reused and got == version
    assert session is not None and session.has_ticket, "no session ticket issued"
    for _ in range(3):  # a resumed session can be resumed again (a new ticket each time)
        status, reused, got, session = get(edge.https_port, ctx, session)
        assert status == "HTTP/1.1 200 OK", status
        assert reused, f"{version} session not resumed"
        assert got == version
        assert session.has_ticket


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_s_client_resumes_by_ticket(edge, pki, version, tmp_path):
    first, second, ticket = s_client_twice(edge, version, tmp_path, pki)
    assert re.search(rf"^New, {version},", first.out, re.M), first.out[-1500:]
    assert re.search(rf"^Reused, {version},", second.out, re.M), second.out[-1500:]
    assert "HTTP/1.1 200 OK" in second.out
    assert ticket is not None and ticket > 64, f"stateless ticket expected, got {ticket} bytes"
    if version == "TLSv1.2":
        # RFC 5077 ticket with rustls' lifetime hint: 12 hours
        assert "TLS session ticket lifetime hint: 43200" in first.out, first.out[-2500:]


def test_resumption_is_per_sni(edge, pki):
    """A session made for one SNI is not resumed under another name."""
    ctx = client_context(verify=False)  # the other name gets the self-signed default
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    _, _, _, session = get(edge.https_port, ctx)
    assert get(edge.https_port, ctx, session)[1], "not resumed under its own name"
    with socket.create_connection((LOOPBACK, edge.https_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="other.example.com", session=session) as tls:
            assert not tls.session_reused


# --------------------------------------------------------------------------- turned off


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_tickets_off_resumes_from_the_cache_only(edge_no_tickets, pki, version, tmp_path):
    first, second, ticket = s_client_twice(edge_no_tickets, version, tmp_path, pki)
    assert re.search(rf"^Reused, {version},", second.out, re.M), second.out[-1500:]
    if version == "TLSv1.2":
        assert ticket is None, f"a TLS 1.2 ticket was issued ({ticket} bytes)"
        assert "session ticket lifetime hint" not in first.out
    else:
        assert ticket == STATEFUL_TICKET_LEN, f"TLS 1.3: a stateless ticket was issued ({ticket} bytes)"
    ctx = context(pki.ca_path, version)
    _, _, _, session = get(edge_no_tickets.https_port, ctx)
    assert session.has_ticket == (version == "TLSv1.3")
    status, reused, _, _ = get(edge_no_tickets.https_port, ctx, session)
    assert status == "HTTP/1.1 200 OK" and reused


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_no_tickets_and_no_cache_resumes_nothing(edge_no_resumption, pki, version, tmp_path):
    first, second, ticket = s_client_twice(edge_no_resumption, version, tmp_path, pki)
    assert ticket is None, f"a ticket was issued ({ticket} bytes)"
    assert "session ticket lifetime hint" not in first.out
    assert second is None or re.search(rf"^New, {version},", second.out, re.M), second.out[-1500:]
    ctx = context(pki.ca_path, version)
    _, _, _, session = get(edge_no_resumption.https_port, ctx)
    status, reused, _, _ = get(edge_no_resumption.https_port, ctx, session)
    assert status == "HTTP/1.1 200 OK" and not reused


# --------------------------------------------------------------------------- certificate changes


def test_rotated_certificate_reaches_new_handshakes_and_bounds_resumed_ones(module_env, pki, manifests):
    """Resumption skips the certificate. A rotated certificate still reaches every new full
    handshake at once (sessions do not pin it), the old session still resumes (as with any
    server, for its lifetime), and a resumed connection is an authority only for the names the
    SNI's certificate covers now: a name the new certificate dropped is answered 421."""
    v1 = pki.leaf("resume-alias-v1", [HOST, ALIAS])
    docs = dict(manifests)
    docs["secret.yaml"] = cert_secret("resume-tls", v1)
    docs["ingress.yaml"] = edge_ingress("edge", [([HOST, ALIAS], "resume-tls")], "echo", 80)
    e = start_edge(module_env, docs, name="edge-resume-rotate")
    ctx = context(pki.ca_path, "TLSv1.3")
    _, _, _, session = get(e.https_port, ctx)
    status, reused, _, session = get(e.https_port, ctx, session, host=ALIAS)
    assert reused and status == "HTTP/1.1 200 OK", (reused, status)

    v2 = pki.leaf("resume-alias-v2", [HOST])
    e.write_secret("secret.yaml", cert_secret("resume-tls", v2))
    wait_fingerprint(e.https_port, HOST, v2.fingerprint, timeout=5)
    assert peer_fingerprint(e.https_port, HOST) == v2.fingerprint
    status, reused, _, session = get(e.https_port, ctx, session)
    assert reused and status == "HTTP/1.1 200 OK", (reused, status)
    status, reused, _, _ = get(e.https_port, ctx, session, host=ALIAS)
    assert reused, "session not resumed"
    assert status.startswith("HTTP/1.1 421"), status
