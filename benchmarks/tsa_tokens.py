"""In-process RFC 3161 token throughput on one core, beside raw ECDSA P-256 signing.

Tokens one request at a time (``respond``) and eight at a time (``respond_all``, as the
fast lane answers what an event-loop iteration brings: one clock reading and the
signatures back to back).

Run: ``.venv/bin/python benchmarks/tsa_tokens.py [--seconds S]``. Makes a throw-away
development PKI in a temporary directory; prints one line per figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from rfc3161_client import HashAlgorithm, TimestampRequestBuilder

from appliance.tsa import TimeStampAuthority, parse_request
from appliance.tsa.credentials import TsaCredentials, load_credentials
from appliance.tsa.dev_pki import init_dev_pki
from tests.tsa.reference_builder import reference_response

POLICY = "1.3.6.1.4.1.99999.1.1"
BATCH = 8  # requests answered together, as the fast lane does with what one read brings


def rate(fn: Callable[[], object], seconds: float, rounds: int = 5) -> tuple[float, float]:
    """(best, median) calls per CPU-second of ``fn``, over ``rounds`` rounds sharing
    ``seconds`` of this process's CPU time.

    CPU time, not wall time, and the best round beside the median: the figure is what one
    core delivers, even on a shared machine where other processes take turns on it."""
    fn()  # warm up
    results = []
    for _ in range(rounds):
        n, start = 0, time.process_time()
        deadline = start + seconds / rounds
        while True:
            for _ in range(50):
                fn()
            n += 50
            now = time.process_time()
            if now >= deadline:
                results.append(n / (now - start))
                break
    return max(results), statistics.median(results)


def _reference(creds: TsaCredentials, request: bytes, serial: Callable[[], int]) -> bytes:
    key = creds.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return reference_response(
        creds, request, policy=POLICY, serial=serial(), gen_time=dt.datetime.now(dt.UTC),
        accuracy_us=81_000, digest="sha256", signature_algorithm="sha256_ecdsa",
        sign=partial(key.sign, signature_algorithm=ec.ECDSA(hashes.SHA256())),
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per figure")
    args = parser.parse_args()
    s = args.seconds

    request = (
        TimestampRequestBuilder()
        .data(b"benchmark")
        .hash_algorithm(HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
        .as_bytes()
    )
    now = dt.datetime.now(dt.UTC)
    serial = iter(range(1, 1 << 62)).__next__

    def reading() -> tuple[int, int]:
        return time.time_ns(), 80_000_000

    with tempfile.TemporaryDirectory(prefix="horodate-bench-") as tmp:
        figures: list[tuple[str, tuple[float, float]]] = []
        for key_type in ("ec-p256", "rsa-2048"):
            pki = init_dev_pki(Path(tmp) / key_type, key_type=key_type, now=now)
            creds = load_credentials(pki.tsa_key, pki.tsa_cert, pki.chain, now=now)
            label = key_type.upper()
            if key_type == "ec-p256":
                key = creds.private_key
                assert isinstance(key, ec.EllipticCurvePrivateKey)
                payload = b"\x31" + b"\x00" * 400  # about the size of the signed attributes
                algo = ec.ECDSA(hashes.SHA256())
                sig = key.sign(payload, algo)
                pub = key.public_key()
                figures.append(("raw ECDSA P-256 sign", rate(partial(key.sign, payload, algo), s)))
                figures.append(
                    ("raw ECDSA P-256 verify", rate(partial(pub.verify, sig, payload, algo), s))
                )
                figures.append(
                    ("request parse (strict DER)", rate(lambda: parse_request(request), s))
                )
            for title, kwargs in (
                ("default self-check", {}),
                ("self-check every token", {"self_check_every": 1}),
                ("no self-check", {"self_check": False}),
            ):
                if key_type == "rsa-2048" and title != "default self-check":
                    continue
                tsa = TimeStampAuthority(creds, policy_oid=POLICY, **kwargs)
                reply = tsa.respond(request, time=reading, serial=serial)
                assert reply.granted, reply.status_text

                def token(tsa: TimeStampAuthority = tsa) -> object:
                    return tsa.respond(request, time=reading, serial=serial)

                figures.append((f"{label} tokens, {title}", rate(token, s)))
            tsa = TimeStampAuthority(creds, policy_oid=POLICY)

            def together(tsa: TimeStampAuthority = tsa, batch: int = BATCH) -> object:
                return tsa.respond_all([request] * batch, time=reading, serial=serial)

            best, median = rate(together, s)
            title = f"{BATCH} together (respond_all)"
            figures.append((f"{label} tokens, {title}", (best * BATCH, median * BATCH)))
            if key_type == "ec-p256":
                reference = partial(_reference, creds, request, serial)
                figures.append(
                    ("EC-P256 tokens, naive asn1crypto reference", rate(reference, s / 3))
                )

    print("horodate TSA token engine, in process, one core (SHA-256 request, nonce, certReq)")
    print(f"  {'':<48} {'best':>10} {'median':>10}  (per CPU-second)")
    for name, (best, median) in figures:
        print(f"  {name:<48} {best:>10,.0f} {median:>10,.0f} /s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
