"""``horodate vault``: the attendance vault, and its operator tools (keys, verify, usage)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from horodate.commands import settings
from horodate.commands.vault_settings import DEFAULT_DATA_DIR, data_dir_of, load_vault_table

log = logging.getLogger("horodate.vault")

DEFAULT_LISTEN = "127.0.0.1:3190"
DEFAULT_TSA = "http://127.0.0.1:3180/tsa"
AUDITOR_DAYS = 90  # a funder's control lasts weeks; the establishment grants a new token after


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "vault",
        help="run the attendance vault (and its tools: keys, verify, usage)",
        description="Keep attendance records append-only, each sealed by an RFC 3161 token "
        "from the appliance, in an RFC 9162 Merkle log with signed checkpoints; serve the "
        "vault's HTTP API (/v1/…).",
    )
    _common(p)
    p.add_argument("--listen", metavar="HOST:PORT", help=f"default {DEFAULT_LISTEN}")
    p.add_argument(
        "--tsa",
        action="append",
        metavar="URL",
        help=f"the appliance's RFC 3161 endpoint (default {DEFAULT_TSA}); several allowed",
    )
    p.add_argument(
        "--tsa-ca",
        type=Path,
        action="append",
        metavar="PEM",
        help="the roots tokens must chain to: once for every TSA, or once per --tsa, in order "
        "(one PKI per site)",
    )
    p.add_argument("--name", help="the vault's name, its checkpoints' origin (kept for life)")
    p.set_defaults(func=run)
    tools = p.add_subparsers(dest="vault_command", metavar="TOOL")

    keys = tools.add_parser("keys", help="bearer tokens for the vault's callers")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = keys_sub.add_parser(
        "create", help="create a bearer token (printed once, alone on the last line)"
    )
    _common(create)
    create.add_argument("--role", required=True, choices=["establishment", "auditor", "admin"])
    create.add_argument("--establishment", metavar="CODE", help="for establishment and auditor")
    create.add_argument("--label", help="who holds it (journaled with each of its calls)")
    create.add_argument(
        "--expires-days",
        type=float,
        metavar="DAYS",
        help=f"refused after this many days (an auditor's default: {AUDITOR_DAYS}; others: never)",
    )
    create.set_defaults(func=run_keys_create)

    verify = tools.add_parser(
        "verify", help="recompute every hash, the tree, checkpoints, tokens and the journal"
    )
    _common(verify)
    verify.add_argument("--tsa-ca", type=Path, metavar="PEM", help="the roots of the tokens")
    verify.add_argument("--json", action="store_true", help="the report as JSON")
    from horodate.commands.vault_verify import add_witness_options

    add_witness_options(verify)
    verify.set_defaults(func=run_verify)

    usage = tools.add_parser("usage", help="usage per establishment per month, for billing")
    _common(usage)
    usage.add_argument("--month", metavar="YYYY-MM", help="one month (default: every month)")
    usage.add_argument("--json", action="store_true", help="one JSON object per line")
    usage.set_defaults(func=run_usage)

    from horodate.commands import vault_retention

    vault_retention.register(tools, _common)

    from horodate.commands import backups

    backups.register(tools, "vault", _common, _backup_kind)


def _common(p: argparse.ArgumentParser) -> None:
    settings.add_location_options(
        p,
        what="vault",
        config_help="TOML configuration (systemd/vault.toml.example)",
        default_data_dir=DEFAULT_DATA_DIR,
    )


def _backup_kind(args: argparse.Namespace) -> tuple[Any, Path]:
    """``vault backup|restore``: the vault's part of a backup, and the data directory."""
    from horodate.backup import VaultKind

    return VaultKind(), data_dir_of(args, load_vault_table(args.config))


def config_from(args: argparse.Namespace) -> Any:
    from daemon.vault import VaultConfig
    from daemon.witnessing import from_table as witnessing_from_table

    conf = load_vault_table(args.config)
    windows = {
        code: dt.timedelta(minutes=float(minutes))
        for code, minutes in conf.get("signing_window_minutes", {}).items()
    }
    kwargs: dict[str, Any] = {
        "data_dir": data_dir_of(args, conf),
        "tsa_urls": tuple(args.tsa or conf.get("tsa", [DEFAULT_TSA])),
        **_tsa_roots(args.tsa_ca or conf.get("tsa_ca")),
        "windows": windows,
        "witnessing": witnessing_from_table(conf),  # [[vault.witnesses]], witness_quorum
    }
    if args.name or "name" in conf:
        kwargs["name"] = args.name or conf["name"]
    if "default_signing_window_minutes" in conf:
        kwargs["signing_window"] = dt.timedelta(
            minutes=float(conf["default_signing_window_minutes"])
        )
    for key in (
        "checkpoint_interval_s",
        "inline_seal_timeout_s",
        "body_max_bytes",
        "tsa_verify_processes",
    ):
        if key in conf:
            kwargs[key] = conf[key]
    return VaultConfig(**kwargs), settings.listen_of(args, conf, DEFAULT_LISTEN)


def _tsa_roots(given: Path | str | list[Path] | list[str] | None) -> dict[str, Any]:
    """``--tsa-ca`` (repeatable) or ``tsa_ca`` (a path or a list): one PEM for every TSA, or
    one per TSA in the order of the URLs."""
    if given is None:
        return {"tsa_ca": None}
    paths = [Path(p) for p in ([given] if isinstance(given, str | Path) else given)]
    return {"tsa_ca": paths[0]} if len(paths) == 1 else {"tsa_ca": None, "tsa_cas": tuple(paths)}


def run(args: argparse.Namespace) -> int:
    from daemon.errors import VaultError

    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    try:
        config, listen = config_from(args)
        if not config.tsa_roots():
            print(
                "horodate vault: --tsa-ca PEM is required: the roots the appliance's tokens "
                "chain to (with `horodate appliance --simulate`, DATA_DIR/keys/ca.pem)",
                file=sys.stderr,
            )
            return 2
        return asyncio.run(serve(config, *settings.host_port(listen)))
    except (VaultError, OSError, ValueError) as e:
        print(f"horodate vault: {e}", file=sys.stderr)
        return 1


async def serve(config: Any, host: str, port: int, *, ready: asyncio.Event | None = None) -> int:
    """Run the vault until SIGTERM/SIGINT (or until the task is cancelled)."""
    from aiohttp import web

    from daemon.http.app import create_app
    from daemon.vault import Vault
    from daemon.vitals import vault_vitals
    from horodate.sd_notify import serve_until
    from timestamping.aio_client import AsyncTsaClient, ClientPolicy

    policy = ClientPolicy(verify_processes=config.tsa_verify_processes)
    async with AsyncTsaClient(config.tsa_urls, config.tsa_roots(), policy=policy) as tsa:
        vault = Vault(config, tsa=tsa)
        runner = web.AppRunner(create_app(vault), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        log.info("vault listening on http://%s:%d/v1/ (data in %s)", host, port, config.data_dir)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        try:
            # systemd's READY=1 now: the store is open and checked, the site listens
            await serve_until(stop, lambda: vault_vitals(vault))
        finally:
            await runner.cleanup()
    return 0


def run_keys_create(args: argparse.Namespace) -> int:
    from daemon.clock import utc_now, utc_text
    from daemon.errors import VaultError
    from daemon.journal import JournalRecord, append
    from daemon.keys import Role, new_token, token_hash
    from daemon.store import Store, TokenRow

    role = Role(args.role)
    if role in (Role.ESTABLISHMENT, Role.AUDITOR) and not args.establishment:
        print(
            f"horodate vault keys create: --role {role} needs --establishment CODE", file=sys.stderr
        )
        return 2
    if role is Role.ADMIN and args.establishment:
        print("horodate vault keys create: an admin token has no establishment", file=sys.stderr)
        return 2
    establishment = args.establishment if role is not Role.ADMIN else None
    label = args.label or f"{role}:{establishment or 'operator'}"
    days = args.expires_days if args.expires_days is not None else (
        AUDITOR_DAYS if role is Role.AUDITOR else None
    )  # fmt: skip
    if days is not None and not 0 < days <= 3660:
        print("horodate vault keys create: --expires-days is from 0 to 3660", file=sys.stderr)
        return 2
    token = new_token()
    try:
        conf = load_vault_table(args.config)
        store = Store.open(data_dir_of(args, conf))
        try:
            moment = utc_now()
            now = utc_text(moment)
            expires = None if days is None else utc_text(moment + dt.timedelta(days=days))
            record = JournalRecord(
                at=now,
                actor="command line",
                role="admin",
                establishment=establishment,
                action="vault keys create",
                target=f"token {label} ({role})"
                + ("" if expires is None else f", expires {expires}"),
                outcome="ok",
                status=0,
            )
            with store.transaction() as w:
                w.add_api_token(
                    TokenRow(
                        token_hash=token_hash(token),
                        role=str(role),
                        establishment=establishment,
                        label=label,
                        created_at=now,
                        expires_at=expires,
                    )
                )
                append(w, record)
        finally:
            store.close()
    except (VaultError, OSError, ValueError) as e:
        print(f"horodate vault keys create: {e}", file=sys.stderr)
        return 1
    until = "" if expires is None else f", valid until {expires}"
    print(
        f"bearer token for {label} ({role}{until}); it is shown once, the vault keeps only "
        "its hash:"
    )
    print(token)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from horodate.commands.vault_verify import run as verify

    conf = load_vault_table(args.config)
    args.data_dir = data_dir_of(args, conf)
    args.witness_table = conf  # [[vault.witnesses]], when --witness-vkey is not given
    return verify(args)


def run_usage(args: argparse.Namespace) -> int:
    from daemon.errors import VaultError
    from daemon.usage import usage

    conf = load_vault_table(args.config)
    try:
        rows = usage(data_dir_of(args, conf), month=args.month)
    except (VaultError, OSError, ValueError) as e:
        print(f"horodate vault usage: {e}", file=sys.stderr)
        return 1
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    print(
        f"{'month':8} {'establishment':24} {'sealed':>8} {'pending':>8} {'reads':>8} {'audits':>7}"
    )
    for row in rows:
        print(
            f"{row['month']:8} {row['establishment']:24} {row['entries_sealed']:>8} "
            f"{row['entries_pending']:>8} {row['reads']:>8} {row['audits']:>7}"
        )
    if not rows:
        print("(no activity)")
    return 0
