"""``horodate keys``: the TSA's keys and certificates.

* ``horodate keys init --dir DIR`` — a development root CA and a TSA key/certificate;
* ``horodate keys csr --key KEY --cn NAME -o tsa.csr`` — a certificate signing request for
  a real CA (``--generate`` creates the key first);
* ``horodate keys check --key KEY --cert CERT [--chain CHAIN]`` — the checks the appliance
  makes at start-up, and the days left before the certificate expires.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("keys", help="TSA keys and certificates (dev PKI, CSR, check)")
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    init = sub.add_parser(
        "init",
        help="create a development root CA and TSA key/certificate (never for production)",
    )
    init.add_argument("--dir", type=Path, required=True, help="directory to write into")
    init.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    init.add_argument("--organization", default="Horodate development")
    init.set_defaults(func=_init)

    csr = sub.add_parser("csr", help="create a certificate signing request for a real CA")
    csr.add_argument("--key", type=Path, required=True, help="TSA private key (PEM, mode 0600)")
    csr.add_argument(
        "--generate", action="store_true", help="generate the key first (it must not exist)"
    )
    csr.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    csr.add_argument("--cn", required=True, help="subject common name, e.g. 'Example TSA 1'")
    csr.add_argument("--org", help="subject organization")
    csr.add_argument("--country", help="subject country, two letters")
    csr.add_argument("-o", "--out", type=Path, help="write the CSR here (default: stdout)")
    csr.set_defaults(func=_csr)

    check = sub.add_parser("check", help="validate a key/certificate as the appliance does")
    check.add_argument("--key", type=Path, required=True)
    check.add_argument("--cert", type=Path, required=True)
    check.add_argument("--chain", type=Path)
    check.set_defaults(func=_check)


def _init(args: argparse.Namespace) -> int:
    from appliance.tsa.dev_pki import init_dev_pki
    from appliance.tsa.errors import CredentialsError

    try:
        paths = init_dev_pki(
            args.dir,
            key_type=args.key_type,
            now=dt.datetime.now(dt.UTC),
            organization=args.organization,
        )
    except CredentialsError as e:
        print(f"horodate keys init: {e}", file=sys.stderr)
        return 1
    print(f"development PKI ({args.key_type}) written — NOT for production:")
    print(f"  root CA certificate  {paths.ca_cert}   (give this to verifiers: --ca / -CAfile)")
    print(f"  root CA key          {paths.ca_key}")
    print(f"  TSA key              {paths.tsa_key}")
    print(f"  TSA certificate      {paths.tsa_cert}")
    print(f"  chain                {paths.chain}")
    return 0


def _csr(args: argparse.Namespace) -> int:
    from appliance.tsa.credentials import load_private_key
    from appliance.tsa.dev_pki import generate_key, make_csr, write_private_key
    from appliance.tsa.errors import CredentialsError

    try:
        if args.generate:
            key = generate_key(args.key_type)
            write_private_key(args.key, key)
            print(f"new {args.key_type} key written to {args.key} (mode 0600)", file=sys.stderr)
        else:
            key = load_private_key(args.key)
        pem = make_csr(key, common_name=args.cn, organization=args.org, country=args.country)
    except CredentialsError as e:
        print(f"horodate keys csr: {e}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(pem.decode("ascii"))
    else:
        args.out.write_bytes(pem)
        print(f"CSR written to {args.out}; send it to your CA", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    from appliance.tsa.credentials import days_to_expiry, expiry_warning, load_credentials
    from appliance.tsa.errors import CredentialsError

    now = dt.datetime.now(dt.UTC)
    try:
        creds = load_credentials(args.key, args.cert, args.chain, now=now)
    except CredentialsError as e:
        print(f"horodate keys check: {e}", file=sys.stderr)
        return 1
    print(f"OK: {creds.certificate.subject.rfc4514_string()} ({creds.key_type})")
    print(f"  chain: {len(creds.chain)} certificate(s) above it")
    print(f"  expires in {days_to_expiry(creds, now):.1f} days")
    warning = expiry_warning(creds, now)
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    return 0
