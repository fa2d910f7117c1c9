"""pika over TLS (amqps): PLAIN over TLS, EXTERNAL with a client certificate,
and an unknown certificate user refused.

The module starts a second warren of its own with TLS, so it runs only when
run.sh starts the broker (WARREN_BIN) and the openssl command is there to make
a CA, a server certificate for 127.0.0.1/localhost and client certificates;
otherwise it is skipped.
"""

import os
import shutil
import socket
import ssl
import subprocess
import time

import pika
import pytest

WARREN_BIN = os.environ.get("WARREN_BIN")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def issue(d, name, subject, extensions):
    """A P-256 key and a v3 certificate signed by the test CA."""
    (d / f"{name}.ext").write_text(extensions)
    openssl(d, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-set_serial", str(int(time.time() * 1000)), "-days", "2",
            "-extfile", f"{name}.ext", "-out", f"{name}.pem")


def make_pki(d):
    openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=Warren interop CA")
    issue(d, "server", "/CN=localhost",
          "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
          "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    client = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
    issue(d, "guest", "/O=Warren interop/CN=guest", client)
    issue(d, "mallory", "/O=Warren interop/CN=mallory", client)


class TlsBroker:
    def __init__(self, d, port):
        self.dir = d
        self.port = port

    def params(self, client=None, credentials=None):
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
        if client:
            ctx.load_cert_chain(str(self.dir / f"{client}.pem"), str(self.dir / f"{client}.key"))
        return pika.ConnectionParameters(
            host="127.0.0.1", port=self.port,
            ssl_options=pika.SSLOptions(ctx, "localhost"),
            credentials=credentials or pika.PlainCredentials("guest", "guest"),
            socket_timeout=5, stack_timeout=10, connection_attempts=1)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    if not WARREN_BIN:
        pytest.skip("needs WARREN_BIN: run.sh starts warren itself")
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make certificates")
    d = tmp_path_factory.mktemp("tls")
    make_pki(d)
    port, tls_port = free_port(), free_port()
    log = open(d / "warren.log", "wb")
    proc = subprocess.Popen(
        [WARREN_BIN, "--bind", "127.0.0.1", "--port", str(port), "--tls-port", str(tls_port),
         "--metrics-port", "0", "--management-port", "0", "--data-dir", str(d / "data"),
         "--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key"),
         "--tls-client-ca", str(d / "ca.pem")],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, (d / "warren.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "warren did not open its TLS port"
                time.sleep(0.1)
        yield TlsBroker(d, tls_port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def round_trip(conn, body):
    ch = conn.channel()
    queue = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.basic_publish(exchange="", routing_key=queue, body=body)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        method, _props, got = ch.basic_get(queue=queue, auto_ack=True)
        if method:
            return got
        time.sleep(0.02)
    raise AssertionError("message never arrived")


def test_plain_login_over_tls(tls_broker):
    conn = pika.BlockingConnection(tls_broker.params())
    try:
        assert round_trip(conn, b"over tls") == b"over tls"
    finally:
        conn.close()


def test_external_login_with_a_client_certificate(tls_broker):
    params = tls_broker.params(client="guest", credentials=pika.credentials.ExternalCredentials())
    conn = pika.BlockingConnection(params)
    try:
        assert round_trip(conn, b"external") == b"external"
    finally:
        conn.close()


def test_unknown_certificate_user_is_refused(tls_broker):
    params = tls_broker.params(client="mallory", credentials=pika.credentials.ExternalCredentials())
    with pytest.raises(pika.exceptions.AMQPConnectionError) as refused:
        pika.BlockingConnection(params)
    assert "403" in repr(refused.value) or "ACCESS_REFUSED" in repr(refused.value), repr(refused.value)
