"""The RFC 3161 vocabulary both daemons share: the status codes and one exception root.

``PKIStatus`` and ``FailInfo`` are the RFC's; the appliance answers with them, the clients
read them. Every failure of this package is a :class:`TimestampingError` with a sentence for
a person; foreign exceptions are wrapped with ``raise ... from e``.
"""

from __future__ import annotations

import enum


class TimestampingError(Exception):
    """A time-stamp could not be obtained or does not verify; the message says why."""


class TsaUnreachable(TimestampingError):
    """The TSA could not be reached, or did not answer with a time-stamp reply."""


class VerificationFailed(TimestampingError):
    """The token does not prove what it should (wrong data, signature, chain, nonce…)."""


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
