"""The TSA's key and certificates on disk: the private key the appliance's user's alone,
every certificate of the chain valid today and for a while yet."""

from __future__ import annotations

import datetime as dt
import stat

from cryptography import x509

from .findings import Finding, Host, Verdict

# A certificate closer than this to its end is a warning: a CA takes days to issue a new
# one, and the vault's seals stop the day it ends.
EXPIRY_WARNING_DAYS = 30

RENEW = (
    "renew it: `horodate keys csr --key KEY --cn NAME -o tsa.csr`, send tsa.csr to the CA, "
    "install the answer, then `sudo systemctl reload horodate-appliance`"
)


def check_key(host: Host, path: str, owner: str) -> Finding:
    """The private key: there, owned by ``owner``, not readable by its group nor others."""
    try:
        st = host.path(path).stat()
    except FileNotFoundError:
        st = None
    except OSError as e:  # the keys directory is 0700: its owner's, or root's
        return Finding(
            "tsa-key", Verdict.SKIP, f"cannot look at {path}: {e.strerror}; run it with sudo"
        )
    if st is None:
        return Finding(
            "tsa-key",
            Verdict.FAIL,
            f"{path} does not exist",
            (
                "production: `horodate keys csr --key " + path + " --cn NAME -o tsa.csr` "
                "(creates the key), then install the CA's certificate",
                "development: `horodate keys init --dir " + path.rsplit("/", 1)[0] + "`",
            ),
        )
    problems: list[str] = []
    fixes: list[str] = []
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        problems.append(f"mode {mode:04o}: readable beyond its owner")
        fixes.append(f"sudo chmod 600 {path}")
    actual = host.user_name(st.st_uid)
    if actual != owner:
        problems.append(f"owned by {actual}, not {owner}")
        fixes.append(f"sudo chown {owner}:{owner} {path}")
    if problems:
        return Finding("tsa-key", Verdict.FAIL, f"{path}: " + "; ".join(problems), tuple(fixes))
    return Finding("tsa-key", Verdict.OK, f"{path} (mode {mode:04o}, owner {owner})")


def check_certificates(host: Host, check: str, path: str | None, now: dt.datetime) -> Finding:
    """Every certificate in the PEM file at ``path``: days left; the soonest end decides."""
    if path is None:
        return Finding(check, Verdict.SKIP, "none configured")
    located = host.path(path)
    try:
        data = located.read_bytes()
    except FileNotFoundError:
        return Finding(
            check,
            Verdict.FAIL,
            f"{path} does not exist",
            (f"install the CA's certificate{'s' if check == 'tsa-chain' else ''} as {path}",),
        )
    except OSError as e:
        return Finding(check, Verdict.SKIP, f"cannot read {path} as this user: {e.strerror}")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        return Finding(
            check, Verdict.FAIL, f"{path}: not PEM certificates", (f"`openssl x509 -in {path}`",)
        )
    soonest = min(certs, key=lambda c: c.not_valid_after_utc)
    subject = soonest.subject.rfc4514_string() or "(no subject)"
    left = soonest.not_valid_after_utc - now
    days = left.total_seconds() / 86400
    early = [c for c in certs if c.not_valid_before_utc > now]
    if early:
        return Finding(
            check,
            Verdict.FAIL,
            f"{path}: {early[0].subject.rfc4514_string()} is not valid before "
            f"{early[0].not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            ("is the host's clock right? `timedatectl`; else wait, or ask the CA",),
        )
    if days <= 0:
        return Finding(
            check,
            Verdict.FAIL,
            f"{path}: {subject} EXPIRED {-days:.0f} days ago: no tokens",
            (RENEW,),
        )
    summary = (
        f"{path}: {subject} expires in {days:.0f} days ({soonest.not_valid_after_utc:%Y-%m-%d})"
    )
    if days < EXPIRY_WARNING_DAYS:
        return Finding(check, Verdict.WARN, summary, (RENEW,))
    return Finding(check, Verdict.OK, summary)
