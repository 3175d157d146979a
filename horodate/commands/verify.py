"""``horodate verify FILE FILE.tsr --ca PEM [--openssl]``: check a time-stamp over a file.

Exit status: 0 only when the token verifies (and, with ``--openssl``, OpenSSL agrees);
1 it does not verify (the reason is printed); 2 bad input (a file unreadable, the .tsr
not a time-stamp reply, the CA file without a root).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "verify",
        help="verify an RFC 3161 time-stamp over a file",
        description="Verify that FILE.tsr (an RFC 3161 TimeStampResp) time-stamps FILE: "
        "message imprint, signature, certificate chain up to the root CA in PEM, and the "
        "TSA certificate's critical timeStamping extended key usage.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the time-stamped file")
    p.add_argument("reply", type=Path, metavar="FILE.tsr", help="its time-stamp reply (DER)")
    p.add_argument(
        "--ca",
        type=Path,
        required=True,
        metavar="PEM",
        help="trusted root CA certificate(s); add the TSA certificate if the token lacks it",
    )
    p.add_argument(
        "--openssl",
        action="store_true",
        help="also run `openssl ts -verify` for a second, independent opinion",
    )
    p.add_argument("--policy", metavar="OID", help="require this TSA policy")
    p.set_defaults(func=run)


def _err(message: str) -> None:
    print(f"horodate verify: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from timestamping import (
        TimestampingError,
        VerificationFailed,
        describe_failure,
        hash_file,
        parse_reply,
    )
    from timestamping.verify import verify_reply, verify_with_openssl

    try:
        reply_der = args.reply.read_bytes()
        ca_pem = args.ca.read_bytes()
    except OSError as e:
        _err(f"cannot read {e.filename}: {e.strerror}")
        return EXIT_INPUT
    try:
        reply = parse_reply(reply_der)
    except TimestampingError as e:
        _err(f"{args.reply}: {e}")
        return EXIT_INPUT
    if not reply.granted or reply.info is None:
        _err(f"{args.reply} holds no token: {describe_failure(reply)}")
        return EXIT_FAILED
    digest = reply.info.digest
    if digest is None:
        _err(f"{args.reply}: unsupported hash algorithm {reply.info.hash_oid}")
        return EXIT_FAILED
    try:
        imprint = hash_file(args.file, digest)
    except TimestampingError as e:
        _err(str(e))
        return EXIT_INPUT
    try:
        verified = verify_reply(
            reply_der, message_imprint=imprint, ca_pem=ca_pem, policy_oid=args.policy
        )
        openssl_said = None
        if args.openssl:
            verify_with_openssl(reply_der, message_imprint=imprint, ca_pem=ca_pem)
            openssl_said = "Verification: OK"
    except VerificationFailed as e:
        _err(f"NOT VERIFIED: {e}")
        return EXIT_FAILED
    except TimestampingError as e:
        _err(str(e))
        return EXIT_INPUT
    info = verified.info
    print(f"verified: {args.reply} time-stamps {args.file}")
    print(f"  genTime:  {info.gen_time.isoformat().replace('+00:00', 'Z')}  ({info.gen_time_text})")
    print(f"  accuracy: {info.accuracy if info.accuracy else 'not stated'}")
    print(f"  TSA:      {verified.tsa_subject}")
    print(f"  serial:   {info.serial:#x}")
    print(f"  policy:   {info.policy_oid}")
    print(f"  hash:     {digest.hashlib_name} {imprint.hex()}")
    print(f"  checked:  rfc3161-client (signature, chain to {args.ca}, timeStamping EKU)")
    if openssl_said:
        print(f"  openssl ts -verify: {openssl_said}")
    return EXIT_OK
