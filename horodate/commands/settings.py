"""Where a server command (``horodate vault``, ``horodate witness``) finds its settings: the
command-line option, else the same key in the command's table of the ``--config`` TOML file
(``[vault]``, ``[witness]``), else the default."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any


def add_location_options(
    p: argparse.ArgumentParser, *, what: str, config_help: str, default_data_dir: Path
) -> None:
    """``--config FILE`` and ``--data-dir DIR``, which every subcommand of a server takes."""
    p.add_argument("--config", type=Path, help=config_help)
    p.add_argument("--data-dir", type=Path, help=f"the {what}'s data (default {default_data_dir})")


def load_table(path: Path | None, table: str) -> dict[str, Any]:
    """The ``[table]`` table of the configuration file at ``path`` (empty without a file)."""
    if path is None:
        return {}
    with path.open("rb") as f:
        conf = tomllib.load(f).get(table, {})
    if not isinstance(conf, dict):
        raise ValueError(f"{path}: [{table}] must be a table")
    return conf


def data_dir_of(args: argparse.Namespace, conf: dict[str, Any], default: Path) -> Path:
    """The data directory: --data-dir, else the configuration's, else ``default``."""
    return Path(args.data_dir or conf.get("data_dir") or default)


def listen_of(args: argparse.Namespace, conf: dict[str, Any], default: str) -> str:
    """The listening address: --listen, else the configuration's, else ``default``."""
    return str(args.listen or conf.get("listen") or default)


def host_port(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); an empty host is 127.0.0.1."""
    host, _, port = listen.rpartition(":")
    return host or "127.0.0.1", int(port)
