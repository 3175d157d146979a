"""``horodate witness``: a C2SP tlog-witness, one per datacenter (docs/witness.md)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from horodate.commands import settings

log = logging.getLogger("horodate.witness")

DEFAULT_DATA_DIR = Path("/var/lib/horodate/witness")
DEFAULT_LISTEN = "127.0.0.1:3191"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "witness",
        help="run a C2SP tlog-witness cosigning the vault's checkpoints (init, add-log, show)",
        description="Cosign a log's checkpoints (C2SP tlog-witness, cosignature/v1) once "
        "each is proved consistent with the last one cosigned: POST /add-checkpoint.",
    )
    _common(p)
    p.add_argument("--listen", metavar="HOST:PORT", help=f"default {DEFAULT_LISTEN}")
    p.set_defaults(func=run)
    tools = p.add_subparsers(dest="witness_command", metavar="TOOL")

    init = tools.add_parser(
        "init", help="make the witness's key (once) and print its verifier key (vkey)"
    )
    _common(init)
    init.add_argument(
        "--name", required=True, help="the witness's name, a schema-less URL (kept for life)"
    )
    init.set_defaults(func=run_init)

    add = tools.add_parser("add-log", help="witness a log: its origin and verifier key")
    _common(add)
    add.add_argument("--origin", required=True, help="the log's origin line (the vault's name)")
    add.add_argument(
        "--vkey",
        required=True,
        help="the log's signed-note verifier key (GET /v1/checkpoint/verifier)",
    )
    add.set_defaults(func=run_add_log)

    show = tools.add_parser("show", help="the witness's vkey, its logs and their cosigned sizes")
    _common(show)
    show.set_defaults(func=run_show)


def _common(p: argparse.ArgumentParser) -> None:
    settings.add_location_options(
        p,
        what="witness",
        config_help="TOML configuration, its [witness] table",
        default_data_dir=DEFAULT_DATA_DIR,
    )


def _data_dir(args: argparse.Namespace) -> Path:
    """The tools' data directory (they read nothing else of the [witness] table)."""
    conf = settings.load_table(args.config, "witness")
    return settings.data_dir_of(args, conf, DEFAULT_DATA_DIR)


def _fail(what: str, e: Exception) -> int:
    print(f"horodate witness {what}: {e}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from daemon.errors import VaultError
    from daemon.witness.witness import WitnessConfig

    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    try:
        conf = settings.load_table(args.config, "witness")
        kwargs: dict[str, Any] = {"data_dir": settings.data_dir_of(args, conf, DEFAULT_DATA_DIR)}
        if "body_max_bytes" in conf:
            kwargs["body_max_bytes"] = int(conf["body_max_bytes"])
        host, port = settings.host_port(settings.listen_of(args, conf, DEFAULT_LISTEN))
        return asyncio.run(serve(WitnessConfig(**kwargs), host, port))
    except (VaultError, OSError, ValueError) as e:
        print(f"horodate witness: {e}", file=sys.stderr)
        return 1


async def serve(config: Any, host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT."""
    from aiohttp import web

    from daemon.witness.app import create_app
    from daemon.witness.witness import Witness
    from horodate.sd_notify import LoopVitals, serve_until

    witness = Witness(config)
    runner = web.AppRunner(create_app(witness), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        log.info(
            "witness %s listening on http://%s:%d/add-checkpoint (data in %s)",
            witness.name,
            host,
            port,
            config.data_dir,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        status = LoopVitals(f"witnessing as {witness.name} on {host}:{port}")
        await serve_until(stop, lambda: status)  # systemd's READY=1: it listens
    finally:
        await runner.cleanup()
    return 0


def run_init(args: argparse.Namespace) -> int:
    from daemon.errors import VaultError
    from daemon.witness.witness import init

    try:
        data_dir = _data_dir(args)
        cosigner = init(data_dir, args.name)
    except (VaultError, OSError, ValueError) as e:
        return _fail("init", e)
    print(f"witness {cosigner.name}: key in {data_dir}; its verifier key (give it to the logs):")
    print(cosigner.verifier().key_string())
    return 0


def run_add_log(args: argparse.Namespace) -> int:
    from daemon.errors import VaultError
    from daemon.witness.state import WitnessState
    from daemon.witness.witness import STATE_FILE, load_key

    try:
        data_dir = _data_dir(args)
        load_key(data_dir)  # an initialised witness only
        state = WitnessState.open(data_dir / STATE_FILE)
        try:
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            added = state.add_log(args.origin, args.vkey, at=now)
        finally:
            state.close()
    except (VaultError, OSError, ValueError) as e:
        return _fail("add-log", e)
    print(
        f"{'now witnessing' if added else 'already witnessing'} {args.origin} "
        f"signed by {args.vkey.strip()}"
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    from daemon.errors import VaultError
    from daemon.witness.state import WitnessState
    from daemon.witness.witness import STATE_FILE, load_key

    try:
        data_dir = _data_dir(args)
        cosigner = load_key(data_dir)
        state = WitnessState.open(data_dir / STATE_FILE)
        try:
            logs = state.logs()
        finally:
            state.close()
    except (VaultError, OSError, ValueError) as e:
        return _fail("show", e)
    print(f"witness {cosigner.name}")
    print(f"vkey {cosigner.verifier().key_string()}")
    for entry in logs:
        if entry.latest is None:
            cosigned = "nothing cosigned yet"
        else:
            at = dt.datetime.fromtimestamp(entry.latest.cosigned_at, dt.UTC)
            cosigned = f"size {entry.latest.head.size}, cosigned {at.isoformat()}"
        print(f"log {entry.origin}: {cosigned}")
        for vkey in entry.vkeys:
            print(f"  key {vkey}")
    if not logs:
        print("(no log: horodate witness add-log --origin O --vkey VKEY)")
    return 0
