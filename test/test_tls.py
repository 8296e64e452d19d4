"""wss:// served by the ws worker: a client that verifies the server's
certificate against a CA the test makes, the certificate renewed with a
reload while connections stay open, files that cannot be used, and client
certificates (presence.ssl_ca_file)."""
import asyncio
import datetime
import http.client
import ipaddress
import json
import os
import socket
import pwd
import ssl

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import BASE_GUCS, WAIT, Closed, Cluster, make_token, wait_until


class Authority:
    """A certificate authority of the test's own."""

    def __init__(self, name):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, common_name, server=True):
        """(certificate, key) signed by this authority: for 127.0.0.1 and localhost, or a client's."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_for_postgres(path, data, mode=0o600):
    """A file the server (user postgres) can read; replaced in one rename, as a renewal tool does."""
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    entry = pwd.getpwnam("postgres")
    os.chown(tmp, entry.pw_uid, entry.pw_gid)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


class TlsCluster:
    """A cluster serving wss:// with a certificate from authority."""

    def __init__(self, authority, client_authority=None):
        self.cluster = Cluster(name="presence-tls-")
        self.authority = authority
        self.cert_path = os.path.join(self.cluster.dir, "server.crt")
        self.key_path = os.path.join(self.cluster.dir, "server.key")
        self.ca_path = os.path.join(self.cluster.dir, "ca.crt")
        with open(self.ca_path, "wb") as f:
            f.write(pem(authority.cert))
        self.install(*authority.issue("presence-one"))
        gucs = dict(BASE_GUCS, **{"presence.ssl_cert_file": self.cert_path,
                                  "presence.ssl_key_file": self.key_path})
        # with client certificates required, the test's own checks present one too
        self.own_certificate = client_authority.issue("tests", server=False) if client_authority else None
        if client_authority:
            self.client_ca_path = os.path.join(self.cluster.dir, "clients.crt")
            write_for_postgres(self.client_ca_path, pem(client_authority.cert), 0o644)
            gucs["presence.ssl_ca_file"] = self.client_ca_path
        try:
            self.cluster.start(gucs, wait_worker=False)
            wait_until(lambda: self.healthz() == 200, timeout=30, interval=0.2, what="the worker over https")
        except BaseException:
            self.cluster.destroy()  # a cluster that never served is not left running
            raise

    def install(self, cert, key):
        self.cert = cert
        write_for_postgres(self.key_path, key_pem(key))
        write_for_postgres(self.cert_path, pem(cert), 0o644)

    def client_context(self, authority=None, certificate=False):
        """A client verifying the server; certificate: None for none, False for the tests' own."""
        context = ssl.create_default_context(cafile=None)
        context.load_verify_locations(cadata=pem((authority or self.authority).cert).decode())
        if certificate is False:
            certificate = self.own_certificate
        if certificate:
            cert, key = certificate
            path = os.path.join(self.cluster.dir, "client-%x.pem" % cert.serial_number)
            with open(path, "wb") as f:
                f.write(pem(cert) + key_pem(key))
            context.load_cert_chain(path)
        return context

    def healthz(self, context=None):
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", self.cluster.wsport, timeout=WAIT,
                                               context=context or self.client_context())
            conn.request("GET", "/healthz")
            return conn.getresponse().status
        except (OSError, ssl.SSLError):
            return None

    async def connect(self, token=None, context=None):
        extra = {"Authorization": "Bearer " + token} if token else {}
        return await websockets.connect("wss://127.0.0.1:%d/ws" % self.cluster.wsport,
                                        ssl=context or self.client_context(), extra_headers=extra,
                                        ping_interval=None, open_timeout=WAIT, close_timeout=WAIT)

    def served_serial(self):
        """The serial number of the certificate a new connection is given."""
        context = self.client_context()
        with socket.create_connection(("127.0.0.1", self.cluster.wsport), timeout=WAIT) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number

    def destroy(self):
        self.cluster.destroy()


@pytest.fixture
def authority():
    return Authority("presence test CA")


@pytest.fixture
def tls(authority):
    server = TlsCluster(authority)
    try:
        yield server
    finally:
        server.destroy()


async def welcome(ws, token):
    await ws.send(json.dumps({"type": "auth", "token": token, "ref": 1}))
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def heartbeat_answered(ws):
    """A heartbeat's ack comes back (other messages before it are skipped)."""
    await ws.send('{"type": "heartbeat", "ref": "h"}')
    while json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] != "heartbeat_ack":
        pass
    return True


async def test_a_verifying_client_gets_wss_and_https(tls):
    user = tls.cluster.create_user()
    ws = await tls.connect()
    try:
        reply = await welcome(ws, make_token(user.id))
        assert reply["type"] == "welcome" and reply["userId"] == user.id
    finally:
        await ws.close()
    # the Authorization header works the same over TLS
    ws = await tls.connect(token=make_token(user.id))
    try:
        assert await heartbeat_answered(ws)
    finally:
        await ws.close()
    assert tls.healthz() == 200
    assert tls.served_serial() == tls.cert.serial_number


async def test_the_certificate_is_checked_by_clients(tls):
    # a client that trusts another CA refuses the server
    with pytest.raises(ssl.SSLCertVerificationError):
        await tls.connect(context=tls.client_context(authority=Authority("someone else")))
    # plain ws:// to the wss:// port gets no WebSocket
    with pytest.raises((websockets.InvalidHandshake, websockets.InvalidMessage, OSError, EOFError,
                        asyncio.TimeoutError)):
        await websockets.connect("ws://127.0.0.1:%d/ws" % tls.cluster.wsport, open_timeout=5)


async def test_a_reload_renews_the_certificate_and_keeps_open_connections(tls):
    user = tls.cluster.create_user()
    old_serial = tls.cert.serial_number
    ws = await tls.connect(token=make_token(user.id))
    try:
        offset = tls.cluster.log_size()
        tls.install(*tls.authority.issue("presence-two"))
        tls.cluster.sh("reload")
        wait_until(lambda: tls.served_serial() == tls.cert.serial_number, timeout=WAIT,
                   what="new connections to get the renewed certificate")
        assert tls.cert.serial_number != old_serial
        assert "new connections get the TLS certificate /CN=presence-two" in tls.cluster.log_since(offset)
        # the connection made with the old certificate goes on
        assert await heartbeat_answered(ws)
        fresh = await tls.connect(token=make_token(user.id))
        await fresh.close()
    finally:
        await ws.close()


async def test_files_that_cannot_be_used_keep_the_current_certificate(tls):
    serial = tls.cert.serial_number
    offset = tls.cluster.log_size()
    # a key that is not the certificate's
    other_cert, other_key = tls.authority.issue("presence-other")
    write_for_postgres(tls.key_path, key_pem(other_key))
    tls.cluster.sh("reload")
    wait_until(lambda: "the certificate does not match presence.ssl_key_file" in tls.cluster.log_since(offset),
               timeout=WAIT, what="the refused key in the log")
    assert tls.served_serial() == serial
    # a certificate file that is not PEM
    offset = tls.cluster.log_size()
    write_for_postgres(tls.cert_path, b"not a certificate\n", 0o644)
    tls.cluster.sh("reload")
    wait_until(lambda: "could not read presence.ssl_cert_file" in tls.cluster.log_since(offset),
               timeout=WAIT, what="the unreadable certificate in the log")
    assert tls.served_serial() == serial
    assert tls.healthz() == 200
    # and fixed files are taken
    tls.install(*tls.authority.issue("presence-fixed"))
    tls.cluster.sh("reload")
    wait_until(lambda: tls.served_serial() == tls.cert.serial_number, timeout=WAIT, what="the fixed certificate")


async def test_clearing_the_certificate_setting_keeps_the_port_on_tls(tls):
    offset = tls.cluster.log_size()
    tls.cluster.set_gucs({"presence.ssl_cert_file": "", "presence.ssl_key_file": ""})
    tls.cluster.sh("reload")
    wait_until(lambda: "turning TLS off takes a restart" in tls.cluster.log_since(offset),
               timeout=WAIT, what="the reload seen by the worker")
    # still wss://, never plain ws:// on this port until a restart
    assert tls.served_serial() == tls.cert.serial_number
    with pytest.raises((websockets.InvalidHandshake, websockets.InvalidMessage, OSError, EOFError,
                        asyncio.TimeoutError)):
        await websockets.connect("ws://127.0.0.1:%d/ws" % tls.cluster.wsport, open_timeout=5)


async def test_client_certificates_from_the_configured_ca(authority):
    clients = Authority("presence client CA")
    server = TlsCluster(authority, client_authority=clients)
    try:
        user = server.cluster.create_user()
        # without a certificate, and with one from another CA: no handshake
        for certificate in (None, Authority("stranger CA").issue("mallory", server=False)):
            with pytest.raises((ssl.SSLError, OSError, websockets.InvalidHandshake, EOFError, Closed)):
                ws = await server.connect(context=server.client_context(certificate=certificate))
                await heartbeat_answered(ws)
        ws = await server.connect(context=server.client_context(certificate=clients.issue("alice", server=False)))
        try:
            reply = await welcome(ws, make_token(user.id))
            assert reply["type"] == "welcome"
        finally:
            await ws.close()
    finally:
        server.destroy()
