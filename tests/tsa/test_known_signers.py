"""The per-token check of a token from a TSA certificate already verified: it accepts what
the full verification accepts, runs instead of it, and accepts nothing the full verification
would refuse — fuzzed byte by byte against it, on ECDSA and RSA tokens from our engine and on
OpenSSL's."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.tsa import TimeStampAuthority
from appliance.tsa.credentials import TsaCredentials
from appliance.tsa.dev_pki import DevPki
from tests.tsa._support_client import Pki, make_pki, openssl_reply, write_openssl_config
from tests.tsa.conftest import POLICY_OID
from tests.tsa.test_request import make_request
from timestamping import TimestampingError, build_request, parse_reply, random_nonce
from timestamping import verify as verify_module
from timestamping.known_signers import check_known
from timestamping.verify import KNOWN_SIGNERS, verify_reply

DIGEST = hashlib.sha256(b"attendance entry").digest()


def _now_time() -> Callable[[], tuple[int, int]]:
    return lambda: (time.time_ns(), 80_000_000)


@pytest.fixture(autouse=True, scope="module")
def _forget() -> Iterator[None]:
    KNOWN_SIGNERS.clear()
    yield
    KNOWN_SIGNERS.clear()


class Counting:
    """How many tokens went through rfc3161-client (the full verification)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = verify_module._verify_fully

        def counted(*args: object) -> object:
            self.calls += 1
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(verify_module, "_verify_fully", counted)


def _ours(creds: TsaCredentials, n: int) -> list[bytes]:
    tsa = TimeStampAuthority(creds, policy_oid=POLICY_OID)
    return [
        tsa.respond(make_request(digest=DIGEST, nonce=k + 1), time=_now_time(),
                    serial=lambda k=k: 5000 + k).der
        for k in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_a_known_signers_tokens_skip_the_chain_and_say_the_same(
    credentials: Callable[[str], TsaCredentials],
    dev_pki: Callable[[str], DevPki],
    key_type: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = dev_pki(key_type).ca_cert.read_bytes()
    first, second, third = _ours(credentials(key_type), 3)
    counting = Counting(monkeypatch)
    full = verify_reply(first, message_imprint=DIGEST, ca_pem=ca, nonce=1)
    assert counting.calls == 1
    fast = verify_reply(second, message_imprint=DIGEST, ca_pem=ca, nonce=2)
    assert counting.calls == 1  # no chain built for the second
    assert (fast.tsa_subject, fast.tsa_certificate_der) == (
        full.tsa_subject,
        full.tsa_certificate_der,
    )
    assert fast.info.serial == 5001 and fast.info.nonce == 2
    with pytest.raises(TimestampingError, match="nonce"):
        verify_reply(third, message_imprint=DIGEST, ca_pem=ca, nonce=99)
    assert counting.calls == 2  # refused by the full verification, with its reason
    with pytest.raises(TimestampingError, match="does not match"):
        verify_reply(third, message_imprint=hashlib.sha256(b"x").digest(), ca_pem=ca)


def test_another_ca_file_is_not_the_known_signers(
    credentials: Callable[[str], TsaCredentials],
    dev_pki: Callable[[str], DevPki],
) -> None:
    first, second = _ours(credentials("ec-p256"), 2)
    verify_reply(first, message_imprint=DIGEST, ca_pem=dev_pki("ec-p256").ca_cert.read_bytes())
    with pytest.raises(TimestampingError, match="certificate chain"):
        verify_reply(second, message_imprint=DIGEST, ca_pem=dev_pki("ec-p384").ca_cert.read_bytes())


def test_outside_the_chains_validity_the_full_verification_decides(
    credentials: Callable[[str], TsaCredentials],
    dev_pki: Callable[[str], DevPki],
) -> None:
    ca = dev_pki("ec-p256").ca_cert.read_bytes()
    first, second = _ours(credentials("ec-p256"), 2)
    verify_reply(first, message_imprint=DIGEST, ca_pem=ca)
    reply = parse_reply(second)
    assert reply.info is not None and reply.signer_info_der and reply.tst_info_der
    known = KNOWN_SIGNERS.signer(ca, reply.certificates)
    assert known is not None
    assert check_known(reply.signer_info_der, reply.tst_info_der, reply.info.gen_time, known)
    late = known.not_after.replace(year=known.not_after.year + 1)
    assert not check_known(reply.signer_info_der, reply.tst_info_der, late, known)


@pytest.fixture(scope="module")
def openssl_tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, list[bytes]]:
    d: Path = tmp_path_factory.mktemp("openssl-tsa")
    pki = make_pki(d)
    config = write_openssl_config(d, pki)
    tokens = [
        openssl_reply(config, build_request(DIGEST, nonce=random_nonce()).der) for _ in range(2)
    ]
    return pki, tokens


def test_openssls_tokens_take_the_same_path(
    openssl_tokens: tuple[Pki, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pki, (first, second) = openssl_tokens
    ca = pki.root_pem.read_bytes()
    counting = Counting(monkeypatch)
    verify_reply(first, message_imprint=DIGEST, ca_pem=ca)
    verify_reply(second, message_imprint=DIGEST, ca_pem=ca)
    assert counting.calls == 1


class _NotFast(Exception):
    pass


def _fast_only(token: bytes, ca: bytes) -> bool:
    """Whether ``verify_reply`` accepts the token by the per-token check alone."""

    def refuse(*_: object) -> None:
        raise _NotFast

    real = verify_module._verify_fully
    verify_module._verify_fully = refuse  # type: ignore[assignment]
    try:
        verify_reply(token, message_imprint=DIGEST, ca_pem=ca)
        return True
    except (_NotFast, TimestampingError):
        return False
    finally:
        verify_module._verify_fully = real


def _full(token: bytes, ca: bytes) -> bool:
    """The full verification's verdict, nothing remembered."""
    saved = dict(KNOWN_SIGNERS._known)
    KNOWN_SIGNERS.clear()
    try:
        verify_reply(token, message_imprint=DIGEST, ca_pem=ca)
        return True
    except TimestampingError:
        return False
    finally:
        KNOWN_SIGNERS.clear()
        KNOWN_SIGNERS._known.update(saved)


@pytest.fixture(scope="module")
def engine_tokens(
    credentials: Callable[[str], TsaCredentials], dev_pki: Callable[[str], DevPki]
) -> tuple[bytes, list[bytes]]:
    return dev_pki("ec-p256").ca_cert.read_bytes(), _ours(credentials("ec-p256"), 2)


@pytest.fixture(scope="module", params=["openssl", "engine"])
def tokens(
    request: pytest.FixtureRequest,
    openssl_tokens: tuple[Pki, list[bytes]],
    engine_tokens: tuple[bytes, list[bytes]],
) -> tuple[bytes, list[bytes]]:
    """A CA file and two tokens: OpenSSL's TSA's, or our engine's."""
    if request.param == "openssl":
        return openssl_tokens[0].root_pem.read_bytes(), openssl_tokens[1]
    return engine_tokens


@settings(max_examples=700, deadline=None)
@given(changes=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1,
                        max_size=3))  # fmt: skip
def test_a_changed_byte_is_never_accepted_where_the_full_verification_refuses(
    tokens: tuple[bytes, list[bytes]], changes: list[tuple[int, int]]
) -> None:
    ca, (first, second) = tokens
    if KNOWN_SIGNERS.signer(ca, parse_reply(first).certificates) is None:
        verify_reply(first, message_imprint=DIGEST, ca_pem=ca)  # remembers the signer
    token = bytearray(second)
    for at, mask in changes:
        token[at % len(token)] ^= mask
    changed = bytes(token)
    accepted = _fast_only(changed, ca)
    if accepted:
        assert _full(changed, ca), "the per-token check accepted what the full one refuses"


def test_the_unchanged_token_is_accepted_by_both(openssl_tokens: tuple[Pki, list[bytes]]) -> None:
    pki, (first, second) = openssl_tokens
    ca = pki.root_pem.read_bytes()
    verify_reply(first, message_imprint=DIGEST, ca_pem=ca)
    reply = parse_reply(second)
    assert reply.info and reply.signer_info_der and reply.tst_info_der
    known = KNOWN_SIGNERS.signer(ca, reply.certificates)
    assert known is not None
    assert check_known(reply.signer_info_der, reply.tst_info_der, reply.info.gen_time, known)
    signature_flipped = bytearray(reply.signer_info_der)
    signature_flipped[-5] ^= 1  # inside the signature value
    assert not check_known(bytes(signature_flipped), reply.tst_info_der, reply.info.gen_time,
                           known)  # fmt: skip
    other_content = reply.tst_info_der[:-1] + bytes([reply.tst_info_der[-1] ^ 1])
    assert not check_known(reply.signer_info_der, other_content, reply.info.gen_time, known)


def test_a_stored_tokens_facts_read_fast_say_what_the_full_parse_says(
    tokens: tuple[bytes, list[bytes]],
) -> None:
    """read_stored_token (rfc3161-client's decoder, genTime's fraction from the stored
    column) agrees with parse_reply, on our engine's tokens and OpenSSL's (whose certificate
    set is not in DER order: the full parse reads those)."""
    from timestamping.reply import read_stored_token

    _, (token, _) = tokens
    full = parse_reply(token)
    assert full.info is not None
    stored = full.info.gen_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as the vault stores it
    fast = read_stored_token(token, stored)
    assert fast.gen_time == full.info.gen_time and fast.serial == full.info.serial
    assert fast.accuracy == full.info.accuracy
    assert set(fast.certificates) == set(full.certificates)
    wrong = read_stored_token(token, "2001-01-01T00:00:00.000000Z")  # disagrees: full parse
    assert wrong.gen_time == full.info.gen_time
