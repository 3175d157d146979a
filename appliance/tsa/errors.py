"""The RFC 3161 engine's error vocabulary: one exception root and the PKI status codes.

Every error the engine can meet ends up, in one place (:mod:`appliance.tsa.engine`), as a
``TimeStampResp`` with a ``PKIStatus`` and a ``PKIFailureInfo``; these types are what carries
it there.
"""

from __future__ import annotations

import enum


class TsaError(Exception):
    """Root of every error raised by ``appliance.tsa`` (and by ``appliance.keys``)."""


class TimeNotAvailable(TsaError):
    """Raised by the engine's ``time`` callable when the clock ensemble cannot vouch for the time.

    The message (``reason``) goes to the client in the response's ``statusString``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PKIStatus(enum.IntEnum):
    """RFC 3161 §2.4.2 ``PKIStatus``."""

    GRANTED = 0
    GRANTED_WITH_MODS = 1
    REJECTION = 2
    WAITING = 3
    REVOCATION_WARNING = 4
    REVOCATION_NOTIFICATION = 5


class FailInfo(enum.Enum):
    """RFC 3161 §2.4.2 ``PKIFailureInfo``: the value is the bit number in the BIT STRING."""

    badAlg = 0  # unrecognized or unsupported Algorithm Identifier
    badRequest = 2  # transaction not permitted or supported
    badDataFormat = 5  # the data submitted has the wrong format
    timeNotAvailable = 14  # the TSA's time source is not available
    unacceptedPolicy = 15  # the requested TSA policy is not supported by the TSA
    unacceptedExtension = 16  # the requested extension is not supported by the TSA
    addInfoNotAvailable = 17  # the additional information requested could not be understood
    systemFailure = 25  # the request cannot be handled due to system failure


class RequestRejected(TsaError):
    """A time-stamp request the TSA refuses; carries the ``PKIFailureInfo`` to answer with."""

    def __init__(self, fail_info: FailInfo, text: str) -> None:
        super().__init__(f"{fail_info.name}: {text}")
        self.fail_info = fail_info
        self.text = text


class CredentialsError(TsaError):
    """The TSA key, its certificate or the chain cannot be used (see ``appliance.keys``)."""
