"""``horodate appliance``: the time-stamping appliance (clock ensemble + RFC 3161 TSA)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("horodate.appliance")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "appliance",
        help="run the time-stamping appliance",
        description="Read GPS, NTP and the DS3231, cross-check them, and serve RFC 3161 "
        "tokens (POST /tsa), /health, /metrics. Tokens are refused (timeNotAvailable) "
        "while the time cannot be proven within the policy's bound.",
    )
    p.add_argument(
        "--config", type=Path, help="TOML configuration (systemd/appliance.toml.example)"
    )
    p.add_argument(
        "--simulate",
        action="store_true",
        help="read simulated hardware (and serve /sim/faults to inject faults)",
    )
    p.add_argument("--data-dir", type=Path, help="keys, serial state and issuance log")
    p.add_argument("--listen", metavar="HOST:PORT", help="default 127.0.0.1:3180")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="N more processes answering POST /tsa beside the main one ([tsa] workers; "
        "default 0); one per spare core for volume",
    )
    p.set_defaults(func=run)
    tools = p.add_subparsers(dest="appliance_command", metavar="TOOL")
    from horodate.commands import backups

    backups.register(tools, "appliance", _location, _backup_kind)


def _location(p: argparse.ArgumentParser) -> None:
    """``--config`` and ``--data-dir`` for the appliance's tools (as ``horodate issued``)."""
    p.add_argument("--config", type=Path, help="take the data directory from this TOML")
    p.add_argument("--data-dir", type=Path, help="the appliance's data directory")


def _backup_kind(args: argparse.Namespace) -> tuple[Any, Path]:
    """``appliance backup|restore``: the appliance's part of a backup, and its data directory."""
    import datetime as dt

    from appliance.config import ConfigError, load_config
    from appliance.runtime.assembly import key_paths
    from horodate.backup import ApplianceKind

    try:
        config = load_config(args.config).with_overrides(data_dir=args.data_dir)
    except ConfigError as e:
        raise ValueError(str(e)) from e
    keys = key_paths(config)
    configured = [p for p in (keys.key, keys.cert, keys.chain) if p is not None and p.exists()]
    return ApplianceKind(key_paths=configured, now=dt.datetime.now(dt.UTC)), config.data_dir


def run(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.runtime.assembly import StartupError, build_app
    from appliance.runtime.signals import remember_reloads

    remember_reloads()  # a `systemctl reload` while starting must not end the appliance
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    try:
        config = load_config(args.config).with_overrides(
            simulate=True if args.simulate else None,
            data_dir=args.data_dir,
            listen=args.listen,
            workers=args.workers,
        )
        shared = None
        if config.tsa.workers:
            from appliance.runtime.driver_threads import policy_for
            from appliance.runtime.shared_clock import SharedClock

            config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            shared = SharedClock.for_policy(
                policy_for(config), workers=config.tsa.workers, lock_dir=config.data_dir
            )
        app = build_app(config, gen_floor=shared.floor if shared else None)
    except (ConfigError, StartupError) as e:
        print(f"horodate appliance: {e}", file=sys.stderr)
        return 1
    from appliance.http.listening import bind_public
    from appliance.runtime.main_process import serve_forever

    try:
        public = bind_public(config.listen_host, config.listen_port)
    except OSError as e:
        print(
            f"horodate appliance: cannot listen on {config.listen_host}:{config.listen_port}: "
            f"{e.strerror or e}",
            file=sys.stderr,
        )
        return 1
    log.info(
        "listening on http://%s:%d (%s hardware)",
        config.listen_host,
        config.listen_port,
        "simulated" if config.simulate else "real",
    )
    from horodate.sd_notify import supervisor_from_environment

    _fast_event_loop()
    supervise = supervisor_from_environment()
    asyncio.run(serve_forever(app, public, config=config, shared=shared, supervise=supervise))
    return 0


def _fast_event_loop() -> None:
    """uvloop (libuv) where it is installed: a faster event loop for the same code."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()
