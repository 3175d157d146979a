"""The RFC 3161 engine's error vocabulary: one exception root and the PKI status codes.

Every error the engine can meet ends up, in one place (:mod:`appliance.tsa.engine`), as a
``TimeStampResp`` with a ``PKIStatus`` and a ``PKIFailureInfo``; these types are what carries
it there.
"""

from __future__ import annotations

from timestamping.errors import FailInfo, PKIStatus

__all__ = [
    "CredentialsError",
    "FailInfo",
    "PKIStatus",
    "RequestRejected",
    "TimeNotAvailable",
    "TsaError",
]


class TsaError(Exception):
    """Root of every error raised by ``appliance.tsa`` (and by ``appliance.tsa.credentials``)."""


class TimeNotAvailable(TsaError):
    """Raised by the engine's ``time`` callable when the clock ensemble cannot vouch for the time.

    The message (``reason``) goes to the client in the response's ``statusString``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestRejected(TsaError):
    """A time-stamp request the TSA refuses; carries the ``PKIFailureInfo`` to answer with."""

    def __init__(self, fail_info: FailInfo, text: str) -> None:
        super().__init__(f"{fail_info.name}: {text}")
        self.fail_info = fail_info
        self.text = text


class CredentialsError(TsaError):
    """The TSA key, its certificate or the chain cannot be used
    (see ``appliance.tsa.credentials``)."""
