"""``horodate vault keys create`` and ``horodate vault usage``, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.keys import token_hash
from daemon.store import Store
from horodate.cli import main as horodate

from .conftest import VaultUnderTest, entry_now


def test_keys_create_prints_the_token_alone_last_and_stores_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["vault", "keys", "create", "--data-dir", str(tmp_path), "--role", "establishment"]
    assert horodate([*args, "--establishment", "CFA-LYON-02"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("hv_") and " " not in token
    store = Store.open(tmp_path)
    row = store.reader().api_token(token_hash(token))
    assert row is not None and row.role == "establishment" and row.establishment == "CFA-LYON-02"
    records = [json.loads(r[1]) for r in store.reader().journal(0, 10)]
    assert records[-1]["action"] == "vault keys create" and token not in json.dumps(records)
    store.close()
    assert horodate(args) == 2  # an establishment token needs its establishment
    assert "needs --establishment" in capsys.readouterr().err
    assert (
        horodate(["vault", "keys", "create", "--data-dir", str(tmp_path), "--role", "admin"]) == 0
    )


async def test_usage_counts_sealed_entries_and_reads_per_month(
    vault: VaultUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    token = vault.token()
    headers = {**vault.headers(token, "u1"), "Content-Type": "application/json"}
    resp = await vault.client.post("/v1/entries", data=json.dumps(entry_now()), headers=headers)
    assert resp.status == 201
    for _ in range(3):
        await vault.client.get("/v1/entries/0", headers=vault.headers(token))
    assert horodate(["vault", "usage", "--data-dir", str(vault.data_dir), "--json"]) == 0
    rows: list[dict[str, Any]] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    lyon = [r for r in rows if r["establishment"] == "CFA-LYON-02"]
    assert len(lyon) == 1 and lyon[0]["entries_sealed"] == 1 and lyon[0]["reads"] == 3
    assert (
        horodate(["vault", "usage", "--data-dir", str(vault.data_dir), "--month", "13-2026"]) == 1
    )
    assert (
        horodate(["vault", "usage", "--data-dir", str(vault.data_dir), "--month", "1999-01"]) == 0
    )
    assert "(no activity)" in capsys.readouterr().out


def test_the_example_configuration_is_what_the_vault_reads() -> None:
    import argparse
    import datetime as dt

    from horodate.commands.vault import config_from

    example = Path(__file__).resolve().parents[2] / "systemd" / "vault.toml.example"
    args = argparse.Namespace(config=example, data_dir=None, tsa=None, tsa_ca=None, name=None)
    args.listen = None
    config, listen = config_from(args)
    assert listen == "127.0.0.1:3190"
    assert config.name == "vault.example.org/horodate"
    assert config.tsa_urls == ("http://127.0.0.1:3180/tsa",)
    assert config.signing_window == dt.timedelta(minutes=15)
    assert config.windows == {"CFA-LYON-02": dt.timedelta(minutes=30)}
    assert config.inline_seal_timeout_s == 2
    assert config.tsa_verify_processes == 0


def test_two_tsas_take_one_pem_each_or_one_for_both(tmp_path: Path) -> None:
    import argparse

    import pytest

    from daemon.errors import VaultError
    from horodate.commands.vault import config_from

    def config(tsa: list[str], tsa_ca: list[Path]) -> object:
        args = argparse.Namespace(config=None, data_dir=tmp_path, tsa=tsa, tsa_ca=tsa_ca)
        args.name = args.listen = None
        return config_from(args)[0]

    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(b"roots of site A\n")
    b.write_bytes(b"roots of site B\n")
    both = config(["http://a/tsa", "http://b/tsa"], [a, b])
    assert both.tsa_roots() == [a.read_bytes(), b.read_bytes()]  # type: ignore[attr-defined]
    shared = config(["http://a/tsa", "http://b/tsa"], [a])
    assert shared.tsa_roots() == [a.read_bytes()] * 2  # type: ignore[attr-defined]
    with pytest.raises(VaultError, match="2 TSAs and 3 sets of roots"):
        config(["http://a/tsa", "http://b/tsa"], [a, b, a])

    conf = tmp_path / "vault.toml"
    conf.write_text(f'[vault]\ntsa = ["http://a/tsa", "http://b/tsa"]\ntsa_ca = ["{a}", "{b}"]\n')
    args = argparse.Namespace(config=conf, data_dir=tmp_path, tsa=None, tsa_ca=None)
    args.name = args.listen = None
    assert config_from(args)[0].tsa_cas == (a, b)
