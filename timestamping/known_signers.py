"""A token from a TSA certificate already verified: its own signature checked, its chain not
built again.

rfc3161-client builds and checks the TSA certificate's chain for every token: most of
what a token's verification costs (benchmarks/RESULTS.md), for a chain that is the same for
thousands of tokens (the vault seals every entry; an audit trail carries hundreds). No
maintained library verifies a CMS signature against a certificate the caller already
trusts (pyHanko's CMS validator rebuilds the chain too, and is slower), so this module does
the per-token part by hand, with ``cryptography``'s primitives, and nothing else
(ADR 0010):

- the SignerInfo names that certificate (issuer and serial, or subject key identifier);
- its signed attributes say content type ``id-ct-TSTInfo``, carry the ``messageDigest`` of
  the token's TSTInfo bytes, and an ESS signing-certificate attribute (RFC 2634 / RFC 5816)
  whose hash is that certificate's;
- the signature over the signed attributes verifies with the certificate's key (ECDSA, or
  RSA PKCS #1 v1.5, with the SignerInfo's digest);
- the SignedData's digest algorithms are the signer's one;
- the token's genTime falls inside the validity of every certificate of the chain the full
  verification accepted (the window is remembered with the certificate).

It only ever *accepts*: anything unusual — another algorithm, an attribute missing, a
signer not remembered, any check failing — answers ``None`` and the caller runs the full
verification, which decides and says why. A certificate is remembered only after the full
verification of a token it signed passed, per CA file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

_REMEMBERED: Final = 64  # (CA file, TSA certificate) pairs
_HASHES: Final[dict[str, type[hashes.SHA256] | type[hashes.SHA384] | type[hashes.SHA512]]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True, slots=True)
class _Known:
    certificate: x509.Certificate
    der: bytes
    subject: str  # RFC 4514
    issuer_der: bytes  # how a SignerInfo names it: issuer and serial, or key identifier
    serial: int
    key_identifier: bytes | None
    not_before: dt.datetime  # the latest notBefore of the chain
    not_after: dt.datetime  # the earliest notAfter of the chain


class KnownSigners:
    """TSA certificates whose chain a full verification proved, per CA file and per set of
    certificates the token carried (bounded)."""

    def __init__(self, size: int = _REMEMBERED) -> None:
        self._known: OrderedDict[tuple[bytes, tuple[bytes, ...]], _Known] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def remember(
        self,
        ca_pem: bytes,
        carried: tuple[bytes, ...],
        signer: x509.Certificate,
        chain: list[x509.Certificate],
    ) -> None:
        """After a full verification passed: the token's certificates (``carried``, as
        received), its ``signer`` and the ``chain`` it was checked with (the signer,
        intermediates, root), whose validities bound later tokens."""
        der = signer.public_bytes(Encoding.DER)
        key = (hashlib.sha256(ca_pem).digest(), carried)
        known = _Known(
            certificate=signer,
            der=der,
            subject=signer.subject.rfc4514_string(),
            issuer_der=signer.issuer.public_bytes(),
            serial=signer.serial_number,
            key_identifier=_key_identifier(signer),
            not_before=max(c.not_valid_before_utc for c in chain),
            not_after=min(c.not_valid_after_utc for c in chain),
        )
        with self._lock:
            self._known[key] = known
            self._known.move_to_end(key)
            while len(self._known) > self._size:
                self._known.popitem(last=False)

    def signer(self, ca_pem: bytes, carried: tuple[bytes, ...]) -> _Known | None:
        """The signer remembered for tokens carrying exactly ``carried`` (byte for byte:
        OpenSSL reads every certificate a token carries, and refuses a damaged one)."""
        with self._lock:
            return self._known.get((hashlib.sha256(ca_pem).digest(), carried))

    def clear(self) -> None:
        with self._lock:
            self._known.clear()


def _attribute(attrs: Any, name: str) -> Any:
    found = [a for a in attrs if a["type"].native == name]
    if len(found) != 1 or len(found[0]["values"]) != 1:
        return None
    return found[0]["values"][0]


def _key_identifier(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _names_certificate(sid: Any, known: _Known) -> bool:
    if sid.name == "issuer_and_serial_number":
        chosen = sid.chosen
        return bool(
            chosen["serial_number"].native == known.serial
            and chosen["issuer"].dump() == known.issuer_der
        )
    if sid.name == "subject_key_identifier":
        return known.key_identifier is not None and sid.chosen.native == known.key_identifier
    return False


def _signing_certificate_matches(attrs: Any, known: _Known) -> bool:
    v2 = _attribute(attrs, "signing_certificate_v2")
    if v2 is not None:
        ids = v2["certs"]
        if len(ids) < 1:
            return False
        first = ids[0]
        algorithm = first["hash_algorithm"]["algorithm"].native
        if algorithm not in _HASHES:
            return False
        return bool(first["cert_hash"].native == hashlib.new(algorithm, known.der).digest())
    v1 = _attribute(attrs, "signing_certificate")
    if v1 is not None:
        ids = v1["certs"]
        return bool(
            len(ids) >= 1 and ids[0]["cert_hash"].native == hashlib.sha1(known.der).digest()
        )
    return False


def check_known(
    signer_info_der: bytes,
    tst_info_der: bytes,
    gen_time: dt.datetime,
    known: _Known,
    digest_oids: tuple[str, ...] | None = None,
) -> bool:
    """True only if the token's SignerInfo is a good signature by ``known`` over these
    TSTInfo bytes, at a genTime inside the chain's validity (the module says what is
    checked); False for anything else, the full verification then deciding."""
    from asn1crypto import cms

    if not known.not_before <= gen_time <= known.not_after:
        return False
    try:
        si = cms.SignerInfo.load(signer_info_der)
        # The signed attributes' bytes as received, taken before any member is read
        # (asn1crypto re-encodes what it has parsed: slow, and not the bytes signed).
        signed = si["signed_attrs"].dump()
        if si["version"].native not in ("v1", "v3") or not _names_certificate(si["sid"], known):
            return False
        digest_name = si["digest_algorithm"]["algorithm"].native
        if digest_name not in _HASHES:
            return False
        if digest_oids is not None and digest_oids != (si["digest_algorithm"]["algorithm"].dotted,):
            return False  # the SignedData's own list: just the signer's (OpenSSL reads it)
        attrs = si["signed_attrs"]
        if len(attrs) == 0:
            return False
        content_type = _attribute(attrs, "content_type")
        digest = _attribute(attrs, "message_digest")
        if content_type is None or content_type.native != "tst_info" or digest is None:
            return False
        if digest.native != hashlib.new(digest_name, tst_info_der).digest():
            return False
        if not _signing_certificate_matches(attrs, known):
            return False
        if not signed or signed[0] != 0xA0:  # [0] IMPLICIT SET OF Attribute, as received
            return False
        to_verify = b"\x31" + signed[1:]  # RFC 5652 §5.4: signed as an explicit SET OF
        algorithm = si["signature_algorithm"]["algorithm"].native
        signature = si["signature"].native
        key = known.certificate.public_key()
        chosen = _HASHES[digest_name]()
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm in (
            "ecdsa",
            f"{digest_name}_ecdsa",
        ):
            key.verify(signature, to_verify, ec.ECDSA(chosen))
            return True
        if isinstance(key, rsa.RSAPublicKey) and algorithm in (
            "rsassa_pkcs1v15",
            f"{digest_name}_rsa",
        ):
            key.verify(signature, to_verify, padding.PKCS1v15(), chosen)
            return True
        return False
    except (InvalidSignature, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False
