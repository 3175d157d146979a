"""Where the vault's commands find their settings: the configuration file's ``[vault]``
table and the data directory (:mod:`horodate.commands.settings`, for the vault)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from horodate.commands import settings

DEFAULT_DATA_DIR = Path("/var/lib/horodate/vault")


def load_vault_table(path: Path | None) -> dict[str, Any]:
    """The ``[vault]`` table of a configuration file (empty without one)."""
    return settings.load_table(path, "vault")


def data_dir_of(args: argparse.Namespace, conf: dict[str, Any]) -> Path:
    """The data directory: --data-dir, else the configuration's, else the default."""
    return settings.data_dir_of(args, conf, DEFAULT_DATA_DIR)
