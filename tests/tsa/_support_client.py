"""A real, independent TSA for the client tests: ``openssl ts -reply`` behind aiohttp.

The PKI (a root CA, a TSA certificate with the critical ``id-kp-timeStamping`` EKU, and an
unrelated second root) is made here with ``cryptography``, not with the project's own key
code, so that ``horodate stamp``/``verify`` are checked against a peer that shares nothing
with the appliance. The serial-number file starts at a 159-bit value, as the appliance's
serials are, so big serials go through rfc3161-client and OpenSSL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

POLICY = "1.3.6.1.4.1.55555.1.1"
OTHER_POLICY = "1.3.6.1.4.1.55555.1.2"
UNACCEPTED_POLICY = "1.3.6.1.4.1.55555.9.9"
FIRST_SERIAL = (1 << 158) + 0x1234  # a 159-bit serial, like the appliance's
OPENSSL_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Pki:
    root_pem: Path  # the trusted root (what `--ca` gets)
    tsa_pem: Path  # the TSA certificate
    tsa_key: Path
    bundle_pem: Path  # root + TSA certificate (to verify tokens issued without certReq)
    other_root_pem: Path  # an unrelated root: verification against it must fail


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Horodate test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _root(cn: str, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _tsa(
    cn: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # RFC 3161 §2.3: the TSA certificate's only EKU is id-kp-timeStamping, critical.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(directory: Path) -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca_key, ca = _root("Horodate Test Root CA", now)
    tsa_key, tsa = _tsa("Horodate Test TSA", ca_key, ca, now)
    _, other = _root("Some Other Root CA", now)
    files = {
        "root.pem": _pem(ca),
        "tsa.pem": _pem(tsa),
        "tsa.key": _key_pem(tsa_key),
        "bundle.pem": _pem(ca) + _pem(tsa),
        "other-root.pem": _pem(other),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return Pki(
        root_pem=directory / "root.pem",
        tsa_pem=directory / "tsa.pem",
        tsa_key=directory / "tsa.key",
        bundle_pem=directory / "bundle.pem",
        other_root_pem=directory / "other-root.pem",
    )


def write_openssl_config(directory: Path, pki: Pki) -> Path:
    """An ``openssl ts`` configuration; its TSA section is ``good``. ``certs`` puts the root in
    every token too, so tokens carry a two-certificate chain in OpenSSL's (non-DER) order."""
    (directory / "tsaserial").write_text(f"{FIRST_SERIAL:X}\n")

    def section(name: str, cert: Path, key: Path) -> str:
        return f"""
[ {name} ]
serial = {directory / "tsaserial"}
crypto_device = builtin
signer_cert = {cert}
signer_key = {key}
certs = {pki.root_pem}
signer_digest = sha256
default_policy = {POLICY}
other_policies = {OTHER_POLICY}
digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:500, microsecs:100
clock_precision_digits = 3
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""

    config = directory / "openssl-tsa.cnf"
    config.write_text("[ tsa ]\ndefault_tsa = good\n" + section("good", pki.tsa_pem, pki.tsa_key))
    return config


def openssl_reply(config: Path, query_der: bytes, *, section: str = "good") -> bytes:
    """Ask ``openssl ts -reply`` (synchronously) for the reply to ``query_der``."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is required (Debian package openssl)"
    with tempfile.TemporaryDirectory(prefix="tsq-") as tmp:
        q, r = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
        q.write_bytes(query_der)
        run = subprocess.run(
            [
                *(openssl, "ts", "-reply", "-config", str(config), "-section", section),
                *("-queryfile", str(q), "-out", str(r)),
            ],
            capture_output=True,
            text=True,
            timeout=OPENSSL_TIMEOUT_S,
            check=False,
        )
        assert run.returncode == 0, f"openssl ts -reply failed: {run.stderr}"
        return r.read_bytes()


class OpensslTsaServer:
    """An HTTP TSA on 127.0.0.1:<free port>, in a background thread.

    ``POST /tsa``: the body goes through ``openssl ts -reply`` (section ``good``), the answer
    comes back as ``application/timestamp-reply`` — exactly what RFC 3161 §3.4 asks.
    ``POST /huge``: 2 MiB of "reply" (the client must refuse it).
    ``POST /html``: an HTML error page with status 200 (not a time-stamp reply).
    ``POST /slow``: answers after 5 s (for client timeouts).
    """

    def __init__(self, config: Path) -> None:
        self.config = config
        self.url = ""
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    async def _tsa(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        with tempfile.TemporaryDirectory(prefix="tsa-http-") as tmp:
            q, r = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
            q.write_bytes(body)
            proc = await asyncio.create_subprocess_exec(
                "openssl",
                *("ts", "-reply", "-config", str(self.config), "-section", "good"),
                *("-queryfile", str(q), "-out", str(r)),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), OPENSSL_TIMEOUT_S)
            if proc.returncode != 0:
                return web.Response(status=500, text=err.decode(errors="replace"))
            return web.Response(body=r.read_bytes(), content_type="application/timestamp-reply")

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/timestamp-reply"})
        await resp.prepare(request)  # chunked: no Content-Length to trust, the cap must hold
        for _ in range(32):
            await resp.write(b"\x30" * 65536)
        await resp.write_eof()
        return resp

    async def _html(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="<html>oops</html>", content_type="text/html")

    async def _slow(self, request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(5)
        return web.Response(body=b"", content_type="application/timestamp-reply")

    async def _main(self) -> None:
        app = web.Application()
        app.router.add_post("/tsa", self._tsa)
        app.router.add_post("/huge", self._huge)
        app.router.add_post("/html", self._html)
        app.router.add_post("/slow", self._slow)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}"
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await self._runner.cleanup()

    def start(self) -> None:
        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)  # this thread's loop
            try:
                loop.run_until_complete(self._main())
            finally:  # e.g. a /slow handler still sleeping: cancel it, then close
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, name="openssl-tsa", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the test TSA did not start"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


@contextmanager
def openssl_tsa(directory: Path) -> Iterator[tuple[OpensslTsaServer, Pki]]:
    pki = make_pki(directory)
    server = OpensslTsaServer(write_openssl_config(directory, pki))
    server.start()
    try:
        yield server, pki
    finally:
        server.stop()
