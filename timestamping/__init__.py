"""The RFC 3161 client side both daemons share: build a request, read a reply, verify a token.

- :mod:`timestamping.request` builds a ``TimeStampReq`` (RFC 3161 §2.4.1);
- :mod:`timestamping.reply` reads a ``TimeStampResp`` and matches it to its request (§2.4.2);
- :mod:`timestamping.verify` verifies a token with ``rfc3161-client`` and ``openssl ts``;
- :mod:`timestamping.http_client` posts a query (blocking, for the command line) and
  :mod:`timestamping.aio_client` keeps persistent connections to one or more TSAs (aiohttp,
  for the vault).

Nothing here signs or touches a private key: the appliance's engine lives in
``appliance.tsa`` and this package imports nothing of ours (DESIGN.md, layout).
"""

from timestamping.errors import (
    FailInfo,
    PKIStatus,
    TimestampingError,
    TsaUnreachable,
    VerificationFailed,
)
from timestamping.reply import (
    MAX_REPLY_BYTES,
    Accuracy,
    ReplyRejected,
    TokenInfo,
    TsaReply,
    check_reply,
    describe_failure,
    parse_reply,
)
from timestamping.request import Digest, TimeStampQuery, build_request, hash_file, random_nonce

__all__ = [
    "MAX_REPLY_BYTES",
    "Accuracy",
    "Digest",
    "FailInfo",
    "PKIStatus",
    "ReplyRejected",
    "TimeStampQuery",
    "TimestampingError",
    "TokenInfo",
    "TsaReply",
    "TsaUnreachable",
    "VerificationFailed",
    "build_request",
    "check_reply",
    "describe_failure",
    "hash_file",
    "parse_reply",
    "random_nonce",
]
