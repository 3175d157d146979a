"""Audit trails end to end: a vault filled through its API with real tokens, a student's
trail made by ``horodate audit create``, then checked by the bundle's own ``check.py`` (run
by the system's python3, standard library only), by ``horodate audit verify``, and by the
openssl commands VERIFY.md gives — and made to fail, each checker naming what, when any
byte of an entry, a disclosure, a token, a proof or the checkpoint changes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from daemon.audit import checker
from daemon.journal import JournalRecord
from daemon.store import Store
from horodate.cli import main as horodate

from .conftest import VaultUnderTest, entry_now

INE, BIRTH = "0123456789M", "2004-05-17"
OTHER = {"ine": "1234567890V", "birth_date": "2003-01-02", "name": "Hugo Petit"}


async def _post(v: VaultUnderTest, token: str, body: Any, key: str) -> dict[str, Any]:
    resp = await v.client.post(
        "/v1/entries",
        data=json.dumps(body),
        headers={**v.headers(token, key), "Content-Type": "application/json"},
    )
    assert resp.status == 201, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def two_half_days(vault: VaultUnderTest, token: str) -> None:
    """Léa signs S-1 late (12 minutes, corrected to 10) and S-2; Hugo signs S-1; the
    trainer counter-signs S-1 only (keys a to g)."""
    await _post(vault, token, entry_now("roll_call_opened", minutes_ago=9), "a")
    await _post(vault, token, entry_now(minutes_ago=8), "b")
    late = await _post(vault, token, entry_now("late", minutes_ago=8, minutes=12), "c")
    await _post(vault, token, entry_now(minutes_ago=7, student=OTHER), "d")
    await _post(vault, token, entry_now("teacher_signed", minutes_ago=6), "e")
    await _post(vault, token, entry_now(session="S-2", minutes_ago=5), "f")
    correction = entry_now(
        "correction",
        minutes_ago=4,
        corrects=late["index"],
        reason="retard de 10 minutes, pas 12",
        author={"id": "A-1", "name": "Secrétariat"},
    )
    await _post(vault, token, correction, "g")


@pytest.fixture
async def bundle(vault: VaultUnderTest, tmp_path: Path) -> Path:
    """Léa's trail (the student audited) over :func:`two_half_days` and another school's
    entry."""
    await two_half_days(vault, vault.token())
    other = vault.token(est="CFA-NANTES-01")
    await _post(vault, other, {**entry_now(minutes_ago=3), "establishment": "CFA-NANTES-01"}, "h")
    await vault.vault.make_checkpoint()
    out = tmp_path / "trail.zip"
    args = ["audit", "create", "--data-dir", str(vault.data_dir), "--establishment", "CFA-LYON-02"]
    args += ["--ine", INE, "--birth-date", BIRTH, "--funder", "OPCO Atlas", "-o", str(out)]
    args += ["--file-reference", "DOS-2026-0042", "--tsa", vault.appliance.url]
    # in a thread: report.pdf is time-stamped by the appliance this event loop serves
    assert await asyncio.to_thread(horodate, args) == 0
    return out


def _files(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _rezip(files: dict[str, bytes], path: Path) -> Path:
    """The bundle with SHA256SUMS recomputed: what a forger would do, so that the other
    checks, not the sums, must catch the change."""
    import hashlib

    files = {n: d for n, d in files.items() if n != "SHA256SUMS"}
    files["SHA256SUMS"] = "".join(
        f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items())
    ).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    return path


def _check_py(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The bundle's check.py, as an auditor runs it: the system's python3, in the unzipped
    folder, nothing of ours on the path."""
    folder = path.with_suffix("")
    with zipfile.ZipFile(path) as z:
        z.extractall(folder)
    return subprocess.run(
        ["/usr/bin/python3", "-I", "check.py", ".", *extra],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_students_trail_holds_their_entries_and_their_sessions_only(bundle: Path) -> None:
    files = _files(bundle)
    report = json.loads(files["report.json"])
    kinds = sorted(e["kind"] for e in report["entries"])
    assert kinds == sorted(
        ["roll_call_opened", "student_signed", "late", "teacher_signed", "student_signed",
         "correction"]
    )  # fmt: skip
    assert b"Hugo" not in b"".join(files[n] for n in files if n.startswith("disclosures/"))
    assert all(e["session"] in ("S-1", "S-2") for e in report["entries"])
    assert report["request"] == {
        "requested_by": "command line",
        "funder": "OPCO Atlas",
        "file_reference": "DOS-2026-0042",
    }
    rows = {r["session"]: r for r in report["half_days"]}
    assert rows["S-1"]["status"]["code"] == "late" and rows["S-1"]["status"]["minutes"] == 12
    assert rows["S-1"]["counter_signature"]["gen_time"].endswith("Z")
    assert rows["S-1"]["signature"]["accuracy_s"] is not None
    assert rows["S-2"]["counter_signature"] is None
    assert [h["kind"] for h in rows["S-1"]["history"]] == ["correction"]
    assert rows["S-1"]["hours_attended"] == round(3 - 12 / 60, 2)
    assert report["totals"]["hours_planned"] == 6.0
    codes = {c["code"]: c for c in report["controls"]}
    assert "no_counter_signature" in codes
    s2 = [e["index"] for e in report["entries"] if e["session"] == "S-2"]
    assert codes["no_counter_signature"]["entries"] == s2
    for name in ("VERIFY.md", "check.py", "checkpoint.txt", "vault.vkey", "certs/ca.pem",
                 "report.pdf"):  # fmt: skip
        assert name in files


def test_the_bundle_verifies_with_its_check_py_and_with_horodate(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = _check_py(bundle)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 jetons RFC 3161 vérifiés par openssl" in done.stdout
    assert "RÉSULTAT : la piste est intègre" in done.stdout
    assert horodate(["audit", "verify", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "6/6 entries" in out and "bundle verifies" in out
    parallel = subprocess.run(
        [sys.executable, "-m", "horodate", "audit", "verify", str(bundle), "--processes", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert parallel.returncode == 0 and "6/6 entries" in parallel.stdout, parallel.stdout


def test_the_commands_of_verify_md_pass_with_openssl_alone(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "by-hand"
    with zipfile.ZipFile(bundle) as z:
        z.extractall(folder)
    blocks = re.findall(r"```sh\n(.*?)```", (folder / "VERIFY.md").read_text(), re.S)
    assert len(blocks) == 6  # all at once, then the steps by hand (the witnesses': none here)
    index = min(int(p.stem) for p in (folder / "tokens").glob("*.tsr"))
    outputs = []
    for block in blocks[1:]:
        script = "set -euo pipefail\n" + block.replace("N.", f"{index}.")
        done = subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, script + done.stdout + done.stderr
        outputs.append(done.stdout + done.stderr)
    assert ": OK" in outputs[0]  # sha256sum -c
    assert "Verification: OK" in outputs[1] and "Time stamp" in outputs[1]
    assert "Signature Verified Successfully" in outputs[2]
    assert "Verification: OK" in outputs[3]


def _tamper_leaf(files: dict[str, bytes], i: int) -> str:
    name = f"entries/{i}.bin"
    files[name] = files[name].replace(b'"kind":"', b'"kind":"X', 1)
    return f"entry {i}"


def _tamper_disclosure(files: dict[str, bytes], i: int) -> str:
    name = f"disclosures/{i}.json"
    files[name] = files[name].replace(b"L\xc3\xa9a", b"Lia")
    return f"entry {i}"


def _tamper_token(files: dict[str, bytes], i: int) -> str:
    """The token's genTime moved by a year: what a centre would forge to back-date."""
    from timestamping.reply import parse_reply

    name = f"tokens/{i}.tsr"
    info = parse_reply(files[name]).info
    assert info is not None
    when = info.gen_time_text.encode()
    earlier = str(int(when[:4]) - 1).encode() + when[4:]
    files[name] = files[name].replace(when, earlier)
    return f"entry {i}"


def _tamper_proof(files: dict[str, bytes], i: int) -> str:
    name = f"proofs/{i}.tlog-proof"
    lines = files[name].decode().split("\n")
    lines[2] = "A" * 43 + "="  # the first inclusion hash, replaced
    files[name] = "\n".join(lines).encode()
    return f"entry {i}"


def _tamper_checkpoint(files: dict[str, bytes], i: int) -> str:
    note = files["checkpoint.txt"].decode().split("\n")
    note[1] = str(int(note[1]) + 1)
    files["checkpoint.txt"] = "\n".join(note).encode()
    return "checkpoint"


@pytest.mark.parametrize(
    "tamper",
    [_tamper_leaf, _tamper_disclosure, _tamper_token, _tamper_proof, _tamper_checkpoint],
    ids=["entry", "disclosure", "token", "proof", "checkpoint"],
)
def test_any_change_fails_both_checkers_and_names_what(
    bundle: Path, tmp_path: Path, tamper: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _files(bundle)
    report = json.loads(files["report.json"])
    target = next(
        e["index"] for e in report["entries"]
        if e["kind"] == "student_signed" and f"disclosures/{e['index']}.json" in files
    )  # fmt: skip
    what = tamper(files, target)
    forged = _rezip(files, tmp_path / "forged.zip")
    capsys.readouterr()
    assert horodate(["audit", "verify", str(forged)]) == 1
    ours = capsys.readouterr().out
    assert "FAIL" in ours and what in ours, ours
    parallel = subprocess.run(  # the entries checked in two forked processes
        [sys.executable, "-m", "horodate", "audit", "verify", str(forged), "--processes", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert parallel.returncode == 1 and what in parallel.stdout, parallel.stdout
    theirs = _check_py(forged)
    assert theirs.returncode == 1, theirs.stdout
    named = f"{target}" if what.startswith("entry") else "point de contrôle"
    assert "ÉCHEC" in theirs.stdout and named in theirs.stdout, theirs.stdout


def test_a_changed_file_is_named_by_the_sums(bundle: Path, tmp_path: Path) -> None:
    files = _files(bundle)
    files["report.json"] = files["report.json"].replace(b"OPCO Atlas", b"OPCO Autre")
    forged = tmp_path / "sums.zip"
    with zipfile.ZipFile(forged, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    theirs = _check_py(forged)
    assert theirs.returncode == 1 and "report.json a été modifié" in theirs.stdout


def test_each_trail_is_a_journaled_event_without_the_ine(
    bundle: Path, vault: VaultUnderTest
) -> None:
    import hashlib

    store = Store.open(vault.data_dir)
    try:
        records = [JournalRecord.decode(r) for _, r, _ in store.reader().journal(0, 10_000)]
    finally:
        store.close()
    audits = [r for r in records if r.action == "audit create"]
    assert len(audits) == 1
    (audit,) = audits
    assert audit.establishment == "CFA-LYON-02"
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() in (audit.target or "")
    assert "OPCO Atlas" in (audit.target or "") and "DOS-2026-0042" in (audit.target or "")
    assert INE not in json.dumps([r.target for r in records])


async def test_a_request_naming_no_scope_or_an_empty_one_is_refused(
    vault: VaultUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _post(vault, vault.token(), entry_now(minutes_ago=3), "x")
    await vault.vault.make_checkpoint()
    base = ["audit", "create", "--data-dir", str(vault.data_dir), "--establishment", "CFA-LYON-02"]
    out = str(tmp_path / "x.zip")
    base += ["--tsa", vault.appliance.url]
    assert horodate([*base, "--ine", INE, "-o", out]) == 1
    assert "ine and birth_date together" in capsys.readouterr().err
    assert horodate([*base, "--session", "NO-SUCH", "-o", out]) == 1
    assert "no entry of CFA-LYON-02 in this scope" in capsys.readouterr().err
    assert not Path(out).exists()


def test_the_checkers_merkle_agrees_with_the_vaults() -> None:
    from daemon import merkle

    tree = merkle.InMemoryTree()
    for i in range(67):
        tree.append(merkle.leaf_hash(i.to_bytes(4, "big")))
    for size in (1, 2, 3, 7, 8, 31, 67):
        root = tree.root(size)
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, tree.node)
            leaf = merkle.leaf_hash(index.to_bytes(4, "big"))
            assert checker.root_from_inclusion(index, size, leaf, proof) == root
            if proof:
                with pytest.raises(checker.Failed):
                    checker.root_from_inclusion(index, size, leaf, proof[:-1])


def test_the_checkers_canonical_json_is_rfc_8785() -> None:
    import rfc8785
    from hypothesis import given, settings
    from hypothesis import strategies as st

    values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )

    @settings(max_examples=300, deadline=None)
    @given(values)
    def same(value: object) -> None:
        assert checker.jcs(value) == rfc8785.dumps(value)

    same()


async def test_the_api_answers_the_zip_to_the_establishment_and_its_auditor(
    vault: VaultUnderTest, tmp_path: Path
) -> None:
    token = vault.token()
    await _post(vault, token, entry_now(minutes_ago=3), "k1")
    await _post(vault, token, entry_now("teacher_signed", minutes_ago=2), "k2")
    auditor = vault.token(role="auditor", label="OPCO Atlas, contrôleur")
    body = {"session": "S-1", "funder": "OPCO Atlas", "file_reference": "DOS-1"}
    h = {"Content-Type": "application/json"}
    for who in (token, auditor):  # no checkpoint covers them yet: the vault makes one
        resp = await vault.client.post(
            "/v1/audits", data=json.dumps(body), headers={**vault.headers(who), **h}
        )
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/zip"
        data = await resp.read()
        import hashlib

        assert resp.headers["X-Bundle-SHA256"] == hashlib.sha256(data).hexdigest()
        path = tmp_path / f"api-{who[-4:]}.zip"
        path.write_bytes(data)
        assert horodate(["audit", "verify", str(path)]) == 0
    other = vault.token(est="CFA-NANTES-01")
    resp = await vault.client.post(
        "/v1/audits", data=json.dumps(body), headers={**vault.headers(other), **h}
    )
    assert resp.status == 404  # another school's session: as if it did not exist
    admin = vault.token(role="admin", est=None)
    resp = await vault.client.post(
        "/v1/audits", data=json.dumps(body), headers={**vault.headers(admin), **h}
    )
    assert resp.status == 403
    bad = {"student": {"ine": INE}, "when": 1, "from": "2026-13-01"}
    resp = await vault.client.post(
        "/v1/audits", data=json.dumps(bad), headers={**vault.headers(token), **h}
    )
    assert resp.status == 422
    pointers = {e["pointer"] for e in (await resp.json())["errors"]}
    assert pointers == {"/when", "/student", "/from"}
    store = Store.open(vault.data_dir)
    try:
        records = [JournalRecord.decode(r) for _, r, _ in store.reader().journal(0, 10_000)]
    finally:
        store.close()
    audits = [r for r in records if r.action == "audit create"]
    assert [a.actor for a in audits] == ["establishment:CFA-LYON-02", "OPCO Atlas, contrôleur"]
    assert [a.role for a in audits] == ["establishment", "auditor"]
