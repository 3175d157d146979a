"""TSA keys and certificates: what ``load_credentials`` refuses and why, the expiry warning,
the development PKI and the CSR (through the real ``horodate keys`` command)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.tsa import TsaError
from appliance.tsa.credentials import days_to_expiry, expiry_warning, load_credentials
from appliance.tsa.dev_pki import DevPki, make_csr, write_private_key
from appliance.tsa.errors import CredentialsError
from horodate.cli import main as horodate

# "Now" for the whole module, taken once the session's development PKI exists (see
# _now_after_the_pki): taken at collection, it fell before the PKI's certificates when the
# suite ran for more than their 5-minute backdating before reaching this module.
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True, scope="module")
def _now_after_the_pki(tsa_keys: DevPki) -> None:
    global NOW
    NOW = dt.datetime.now(dt.UTC)


def _pem_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def issue(
    pki: DevPki,
    directory: Path,
    *,
    eku: list[x509.ObjectIdentifier] | None = None,
    eku_critical: bool = True,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    not_before: dt.datetime | None = None,  # default: a day before NOW
    not_after: dt.datetime | None = None,  # default: a year after NOW
    key_usage_sign: bool = True,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[Path, Path]:
    """A TSA key and certificate issued by the dev CA of ``pki``, with one thing changed."""
    not_before = not_before or NOW - dt.timedelta(days=1)
    not_after = not_after or NOW + dt.timedelta(days=365)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test TSA")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=eku_critical)
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=key_usage_sign, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False,
        ),
        critical=True,
    )  # fmt: skip
    cert = builder.sign(issuer_key or _pem_key(pki.ca_key), hashes.SHA256())
    key_path, cert_path = directory / "k.pem", directory / "c.pem"
    write_private_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


TS = [ExtendedKeyUsageOID.TIME_STAMPING]


# --- the development PKI ------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_keys_init_makes_loadable_credentials(
    dev_pki: Callable[[str], DevPki], key_type: str
) -> None:
    pki = dev_pki(key_type)
    creds = load_credentials(pki.tsa_key, pki.tsa_cert, pki.chain, now=NOW)
    assert creds.key_type == key_type
    assert [c.subject for c in creds.chain] == [creds.root().subject]
    assert creds.root().subject == creds.root().issuer  # the chain ends at the root
    eku = creds.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == TS
    assert os.stat(pki.tsa_key).st_mode & 0o777 == 0o600
    assert os.stat(pki.ca_key).st_mode & 0o777 == 0o600
    assert creds.chain_pem().count(b"BEGIN CERTIFICATE") == 2


def test_keys_init_refuses_to_overwrite(
    tsa_keys: DevPki, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tsa_keys.tsa_key.read_bytes()
    assert horodate(["keys", "init", "--dir", str(tsa_keys.tsa_key.parent)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert tsa_keys.tsa_key.read_bytes() == before


def test_keys_check_command(tsa_keys: DevPki, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["keys", "check", "--key", str(tsa_keys.tsa_key), "--cert", str(tsa_keys.tsa_cert)]
    assert horodate([*args, "--chain", str(tsa_keys.chain)]) == 0
    out = capsys.readouterr().out
    assert "OK: CN=Horodate development TSA" in out and "expires in 82" in out


# --- what load_credentials refuses ----------------------------------------------------------


def test_group_or_world_readable_key_is_refused(tsa_keys: DevPki, tmp_path: Path) -> None:
    key = tmp_path / "tsa.key"
    shutil.copy(tsa_keys.tsa_key, key)
    for mode in (0o640, 0o604, 0o660):
        os.chmod(key, mode)
        with pytest.raises(CredentialsError, match="chmod 600"):
            load_credentials(key, tsa_keys.tsa_cert, tsa_keys.chain, now=NOW)
    os.chmod(key, 0o400)
    assert load_credentials(key, tsa_keys.tsa_cert, tsa_keys.chain, now=NOW)


def test_certificate_of_another_key_is_refused(
    tsa_keys: DevPki, dev_pki: Callable[[str], DevPki]
) -> None:
    other = dev_pki("ec-p384")
    with pytest.raises(CredentialsError, match="does not match the TSA key"):
        load_credentials(tsa_keys.tsa_key, other.tsa_cert, other.chain, now=NOW)


@pytest.mark.parametrize(
    ("eku", "critical", "why"),
    [
        (None, True, "no extended key usage"),
        (TS, False, "critical=False"),
        (
            [ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING],
            True,
            "exactly one",
        ),
        ([ExtendedKeyUsageOID.SERVER_AUTH], True, "exactly one"),
    ],
)
def test_extended_key_usage_must_be_timestamping_only_and_critical(
    tsa_keys: DevPki, tmp_path: Path, eku: list[x509.ObjectIdentifier] | None, critical: bool,
    why: str,
) -> None:  # fmt: skip
    key, cert = issue(tsa_keys, tmp_path, eku=eku, eku_critical=critical)
    with pytest.raises(CredentialsError, match=why):
        load_credentials(key, cert, tsa_keys.chain, now=NOW)


def test_key_usage_without_signature_is_refused(tsa_keys: DevPki, tmp_path: Path) -> None:
    key, cert = issue(tsa_keys, tmp_path, eku=TS, key_usage_sign=False)
    with pytest.raises(CredentialsError, match="key usage"):
        load_credentials(key, cert, tsa_keys.chain, now=NOW)


def test_certificate_must_be_valid_now(tsa_keys: DevPki, tmp_path: Path) -> None:
    key, cert = issue(tsa_keys, tmp_path, eku=TS, not_before=NOW - dt.timedelta(days=10),
                      not_after=NOW + dt.timedelta(days=10))  # fmt: skip
    assert load_credentials(key, cert, tsa_keys.chain, now=NOW)
    with pytest.raises(CredentialsError, match="expired"):
        load_credentials(key, cert, tsa_keys.chain, now=NOW + dt.timedelta(days=11))
    with pytest.raises(CredentialsError, match="not valid before"):
        load_credentials(key, cert, tsa_keys.chain, now=NOW - dt.timedelta(days=11))


def test_chain_must_issue_the_certificate(
    tsa_keys: DevPki, dev_pki: Callable[[str], DevPki]
) -> None:
    with pytest.raises(CredentialsError, match="not issued by"):
        load_credentials(tsa_keys.tsa_key, tsa_keys.tsa_cert, dev_pki("ec-p384").chain, now=NOW)


def test_certificate_signed_by_an_impostor_ca_is_refused(tsa_keys: DevPki, tmp_path: Path) -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())  # same CA name, different key
    key, cert = issue(tsa_keys, tmp_path, eku=TS, issuer_key=impostor)
    with pytest.raises(CredentialsError, match="not issued by"):
        load_credentials(key, cert, tsa_keys.chain, now=NOW)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        (ec.generate_private_key(ec.SECP521R1()), "secp521r1"),
        (rsa.generate_private_key(65537, 1024), "1024 bits"),
    ],
    ids=["P-521", "RSA-1024"],
)
def test_unsupported_key_types_are_refused(
    tsa_keys: DevPki, tmp_path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    why: str,
) -> None:  # fmt: skip
    key_path = tmp_path / "k.pem"
    write_private_key(key_path, key)
    with pytest.raises(CredentialsError, match=why):
        load_credentials(key_path, tsa_keys.tsa_cert, tsa_keys.chain, now=NOW)


def test_unreadable_files_give_clear_errors(tsa_keys: DevPki, tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="cannot stat"):
        load_credentials(tmp_path / "missing.key", tsa_keys.tsa_cert, None, now=NOW)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(CredentialsError, match="no readable certificate"):
        load_credentials(tsa_keys.tsa_key, garbage, None, now=NOW)
    bad_key = tmp_path / "bad.key"
    write_private_key(bad_key, ec.generate_private_key(ec.SECP256R1()))
    bad_key.write_bytes(b"not a key")
    with pytest.raises(CredentialsError, match="not an unencrypted PEM private key"):
        load_credentials(bad_key, tsa_keys.tsa_cert, None, now=NOW)
    assert issubclass(CredentialsError, TsaError)


def test_chain_may_follow_the_certificate_in_one_file(tsa_keys: DevPki, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(tsa_keys.tsa_cert.read_bytes() + tsa_keys.chain.read_bytes())
    creds = load_credentials(tsa_keys.tsa_key, bundle, None, now=NOW)
    assert len(creds.chain) == 1


# --- expiry ---------------------------------------------------------------------------------


def test_expiry_warning_as_the_date_approaches(tsa_keys: DevPki) -> None:
    creds = load_credentials(tsa_keys.tsa_key, tsa_keys.tsa_cert, tsa_keys.chain, now=NOW)
    assert expiry_warning(creds, NOW) is None
    assert days_to_expiry(creds, NOW) == pytest.approx(825, abs=0.01)
    late = creds.not_after - dt.timedelta(days=10)
    warning = expiry_warning(creds, late)
    assert warning is not None and "expires in 10.0 days" in warning
    assert "Horodate development TSA" in warning
    assert days_to_expiry(creds, late) == pytest.approx(10)


# --- CSR ------------------------------------------------------------------------------------


def test_make_csr_asks_for_the_tsa_extensions() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    csr = x509.load_pem_x509_csr(make_csr(key, common_name="Example TSA 1", organization="Ex",
                                          country="FR"))  # fmt: skip
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=Example TSA 1,O=Ex,C=FR"
    eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == TS
    with pytest.raises(CredentialsError, match="two-letter"):
        make_csr(key, common_name="x", country="France")


def test_keys_csr_command_generates_a_private_key(tmp_path: Path, openssl: str) -> None:
    key, out = tmp_path / "tsa.key", tmp_path / "tsa.csr"
    args = ["keys", "csr", "--key", str(key), "--cn", "Example TSA", "-o", str(out)]
    assert horodate([*args, "--generate", "--key-type", "rsa-2048"]) == 0
    assert os.stat(key).st_mode & 0o777 == 0o600
    csr = x509.load_pem_x509_csr(out.read_bytes())
    assert isinstance(csr.public_key(), rsa.RSAPublicKey)
    out.unlink()
    assert horodate(args) == 0  # again, from the existing key
    assert x509.load_pem_x509_csr(out.read_bytes()).public_key() == csr.public_key()
    os.chmod(key, 0o644)
    assert horodate(args) == 1  # a key others can read is refused


def test_loading_a_soon_expiring_certificate_logs_a_warning(
    tsa_keys: DevPki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, cert = issue(tsa_keys, tmp_path, eku=TS, not_after=NOW + dt.timedelta(days=5))
    with caplog.at_level("WARNING", logger="appliance.tsa.credentials"):
        load_credentials(key, cert, tsa_keys.chain, now=NOW)
    assert any("expires in 5.0 days" in r.getMessage() for r in caplog.records)
