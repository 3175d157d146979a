"""Where the vault's commands find their settings: the configuration file's ``[vault]``
table and the data directory."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path("/var/lib/horodate/vault")


def load_vault_table(path: Path | None) -> dict[str, Any]:
    """The ``[vault]`` table of a configuration file (empty without one)."""
    if path is None:
        return {}
    with path.open("rb") as f:
        data = tomllib.load(f)
    vault = data.get("vault", {})
    if not isinstance(vault, dict):
        raise ValueError(f"{path}: [vault] must be a table")
    return vault


def data_dir_of(args: argparse.Namespace, conf: dict[str, Any]) -> Path:
    """The data directory: --data-dir, else the configuration's, else the default."""
    return Path(args.data_dir or conf.get("data_dir") or DEFAULT_DATA_DIR)
