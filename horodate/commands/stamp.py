"""``horodate stamp FILE --tsa URL -o FILE.tsr``: get an RFC 3161 time-stamp for a file.

Exit status: 0 the token is saved; 1 the TSA refused (its PKIStatus and failInfo are
printed in words) or its reply does not match the request; 2 bad input (file unreadable,
output exists, bad option); 3 the TSA could not be reached or did not answer with a
time-stamp reply.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_INPUT = 2
EXIT_TRANSPORT = 3
DEFAULT_TSA = "http://127.0.0.1:3180/tsa"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "stamp",
        help="time-stamp a file with an RFC 3161 TSA",
        description="Hash FILE, ask the TSA for an RFC 3161 time-stamp over the hash, check "
        "that the reply answers this request, and save the reply (TimeStampResp, DER).",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the file to time-stamp")
    p.add_argument("--tsa", default=DEFAULT_TSA, metavar="URL", help=f"(default {DEFAULT_TSA})")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE.tsr",
        help="where to save the reply (default: FILE.tsr beside FILE)",
    )
    p.add_argument("--hash", choices=("sha256", "sha384", "sha512"), default="sha256")
    p.add_argument(
        "--no-cert-req",
        action="store_true",
        help="do not ask for the TSA certificate in the token (verifiers then need it)",
    )
    p.add_argument("--policy", metavar="OID", help="ask for this TSA policy")
    p.add_argument("--timeout-s", type=float, default=10.0, help="HTTP timeout (default 10 s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument(
        "--ca",
        type=Path,
        metavar="PEM",
        help="also verify the token against this root CA before saving it",
    )
    p.set_defaults(func=run)


def _err(message: str) -> None:
    print(f"horodate stamp: {message}", file=sys.stderr)


def _save(path: Path, data: bytes, *, force: bool) -> None:
    """Write atomically (temp file, fsync, rename): never a half-written token."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite it)")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    from timestamping import (
        Digest,
        ReplyRejected,
        TimestampingError,
        TsaUnreachable,
        build_request,
        check_reply,
        hash_file,
        parse_reply,
        random_nonce,
    )
    from timestamping.http_client import post_query
    from timestamping.verify import verify_reply

    output: Path = args.output or args.file.with_name(args.file.name + ".tsr")
    if output.exists() and not args.force:
        _err(f"{output} exists (use --force to overwrite it)")
        return EXIT_INPUT
    try:
        digest = Digest.from_name(args.hash)
        imprint = hash_file(args.file, digest)
        ca_pem = args.ca.read_bytes() if args.ca else None
        query = build_request(
            imprint,
            digest=digest,
            nonce=random_nonce(),
            cert_req=not args.no_cert_req,
            policy_oid=args.policy,
        )
    except OSError as e:
        _err(f"cannot read {e.filename}: {e.strerror}")
        return EXIT_INPUT
    except TimestampingError as e:
        _err(str(e))
        return EXIT_INPUT
    try:
        reply_der = post_query(args.tsa, query.der, timeout_s=args.timeout_s)
    except TsaUnreachable as e:
        _err(str(e))
        return EXIT_TRANSPORT
    except TimestampingError as e:
        _err(str(e))
        return EXIT_INPUT
    try:
        reply = parse_reply(reply_der)
        info = check_reply(query, reply)
        subject = None
        if ca_pem is not None:
            verified = verify_reply(
                reply_der, message_imprint=imprint, ca_pem=ca_pem, nonce=query.nonce
            )
            subject = verified.tsa_subject
    except ReplyRejected as e:
        _err(f"time-stamp refused: {e}")
        return EXIT_REFUSED
    except TimestampingError as e:
        _err(f"bad reply from {args.tsa}: {e}")
        return EXIT_REFUSED
    try:
        _save(output, reply_der, force=args.force)
    except OSError as e:
        _err(f"cannot write {output}: {e}")
        return EXIT_INPUT
    print(f"time-stamp saved to {output}")
    print(f"  genTime:  {info.gen_time.isoformat().replace('+00:00', 'Z')}  ({info.gen_time_text})")
    print(f"  accuracy: {info.accuracy if info.accuracy else 'not stated'}")
    print(f"  serial:   {info.serial:#x}")
    print(f"  policy:   {info.policy_oid}")
    print(f"  hash:     {digest.hashlib_name} {imprint.hex()}")
    if info.tsa_name:
        print(f"  TSA name: {info.tsa_name}")
    if subject is not None:
        print(f"  verified against {args.ca}: TSA {subject}")
    return EXIT_OK
