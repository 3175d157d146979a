#!/usr/bin/env python3
"""Vérifie une piste d'audit Horodate sans rien d'autre que Python 3 et OpenSSL.

Usage, dans le dossier où la piste a été décompressée (ou en lui donnant le zip) :

    python3 check.py [PISTE.zip | DOSSIER] [--ca RACINES.pem] [--vkey vault.vkey]
                     [--witness-vkey CLÉ_DU_TÉMOIN ...] [--witness-quorum N]

Ce fichier est livré dans la piste pour que l'auditeur le lise : il n'importe que la
bibliothèque standard et appelle ``openssl`` pour les jetons RFC 3161 et la signature
Ed25519 du point de contrôle. Il vérifie, pour chaque entrée :

1. que chaque fichier a l'empreinte SHA-256 que donne SHA256SUMS, et qu'aucun n'y manque ;
2. que l'entrée (entries/N.bin) est du JSON canonique RFC 8785, et que ses divulgations
   (disclosures/N.json) ouvrent ses engagements SHA-256(sel ‖ JCS(valeur)) ;
3. que le jeton (tokens/N.tsr) porte l'empreinte SHA-256(0x00 ‖ entrée) et se vérifie
   avec ``openssl ts -verify`` jusqu'aux racines données ;
4. que la preuve d'inclusion (proofs/N.tlog-proof, RFC 9162) mène à la racine du point de
   contrôle, et que ce point de contrôle est celui de checkpoint.txt ;
puis que checkpoint.txt est signé par la clé du coffre (``openssl pkeyutl``), que ses
cosignatures de témoins (C2SP tlog-cosignature, cosignature/v1) se vérifient et atteignent
le quorum demandé, et que report.json décrit exactement ces entrées. Code de sortie 0
seulement si tout est bon.

Sans ``--ca``, les racines sont celles de la piste (certs/ca.pem) : cela prouve la
cohérence de la piste, pas l'identité de l'horodateur. Donnez les racines publiées par
l'autorité d'horodatage pour le prouver ; de même ``--vkey`` pour la clé du coffre, et
``--witness-vkey`` (une par témoin, publiée par l'exploitant du témoin) pour les témoins :
avec elles, un point de contrôle sans les cosignatures du quorum est refusé — c'est ce qui
trahirait un historique réécrit (une « bifurcation ») par qui détient la clé du coffre.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

LEAF_FORMAT = "horodate/entry/v1"
PROOF_HEADER = "c2sp.org/tlog-proof@v1"
DASH = "\u2014 "
ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")  # RFC 8410 SubjectPublicKeyInfo


class Failed(Exception):
    pass


# -- RFC 8785 for the values a horodate/entry/v1 leaf holds -------------------------------
# Strings, integers, booleans, null, arrays and objects: no floats in these documents (a
# leaf with one is refused), so JCS reduces to sorted keys (UTF-16 order), no spaces, and
# the JSON string escapes Python's json module writes with ensure_ascii=False.


def _utf16_key(s: str) -> bytes:
    return s.encode("utf-16-be")


def jcs(value: object) -> bytes:
    return _jcs(value).encode("utf-8")


def _jcs(v: object) -> str:
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, int):
        if abs(v) > 2**53 - 1:
            raise Failed(f"entier hors de la plage I-JSON : {v}")
        return str(v)
    if isinstance(v, float):
        raise Failed("nombre décimal inattendu dans une entrée")
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(_jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        items = sorted(v.items(), key=lambda kv: _utf16_key(kv[0]))
        return (
            "{"
            + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _jcs(x) for k, x in items)
            + "}"
        )
    raise Failed(f"valeur JSON inattendue : {type(v).__name__}")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise Failed(f"membre JSON en double : {k!r}")
        out[k] = v
    return out


def load_json(data: bytes) -> object:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise Failed(f"JSON illisible : {e}") from e


# -- RFC 9162 ----------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < size:
        raise Failed(f"l'index {index} n'est pas dans un arbre de taille {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise Failed("preuve d'inclusion trop longue")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Failed("preuve d'inclusion trop courte")
    return r


# -- the bundle ---------------------------------------------------------------------------


class Bundle:
    def __init__(self, where: Path) -> None:
        self.files: dict[str, bytes] = {}
        if where.is_dir():
            for p in sorted(where.rglob("*")):
                if p.is_file():
                    self.files[p.relative_to(where).as_posix()] = p.read_bytes()
        else:
            with zipfile.ZipFile(where) as z:
                for name in z.namelist():
                    if not name.endswith("/"):
                        self.files[name] = z.read(name)

    def get(self, name: str) -> bytes:
        if name not in self.files:
            raise Failed(f"{name} manque dans la piste")
        return self.files[name]


def check_sums(b: Bundle) -> str:
    listed: dict[str, str] = {}
    for line in b.get("SHA256SUMS").decode("utf-8").splitlines():
        m = re.fullmatch(r"([0-9a-f]{64})  (\S+)", line)
        if m is None:
            raise Failed(f"SHA256SUMS : ligne illisible {line!r}")
        listed[m.group(2)] = m.group(1)
    for name, digest in listed.items():
        if hashlib.sha256(b.get(name)).hexdigest() != digest:
            raise Failed(f"{name} a été modifié (son SHA-256 n'est pas celui de SHA256SUMS)")
    extra = sorted(set(b.files) - set(listed) - {"SHA256SUMS"})
    if extra:
        raise Failed(f"fichiers absents de SHA256SUMS : {', '.join(extra)}")
    return f"{len(listed)} fichiers ont l'empreinte SHA-256 annoncée"


def parse_checkpoint(note: str) -> tuple[str, int, bytes, str, list[tuple[str, bytes]]]:
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise Failed("checkpoint.txt n'est pas une note signée (texte, ligne vide, signatures)")
    text, block = note[: split + 1], note[split + 2 :]
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not re.fullmatch(r"0|[1-9][0-9]*", lines[1]):
        raise Failed("checkpoint.txt : origine, taille et racine attendues")
    root = base64.b64decode(lines[2], validate=True)
    sigs = []
    for line in block.split("\n")[:-1]:
        if not line.startswith(DASH):
            raise Failed(f"checkpoint.txt : ligne de signature illisible {line[:60]!r}")
        name, _, b64 = line[len(DASH) :].partition(" ")
        sigs.append((name, base64.b64decode(b64, validate=True)))
    return lines[0], int(lines[1]), root, text, sigs


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("openssl")
    if exe is None:
        raise Failed("openssl est introuvable : installez-le (paquet openssl)")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)


def signature_lines(note: str) -> tuple[str, list[str]]:
    """Le texte de la note et ses lignes de signature, telles quelles."""
    split = note.rfind("\n\n")
    return note[: split + 1], note[split + 2 :].split("\n")[:-1]


def read_vkey(vkey: str, key_type: int, what: str, kind: str) -> tuple[str, bytes, bytes]:
    """(nom, identifiant, clé Ed25519) d'une clé de vérification
    ``<nom>+<id hex>+base64(type ‖ clé)`` (C2SP signed-note) du type attendu."""
    name, _, rest = vkey.strip().partition("+")
    key_id_hex, _, key_b64 = rest.partition("+")
    raw = base64.b64decode(key_b64, validate=True)
    if len(raw) != 33 or raw[0] != key_type:
        raise Failed(f"{what} n'est pas {kind} (type 0x{key_type:02x})")
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_id.hex() != key_id_hex:
        raise Failed(f"{what} : l'identifiant de clé ne correspond pas à la clé")
    return name, key_id, raw[1:]


def pem_of(raw_key: bytes, path: Path) -> Path:
    body = base64.b64encode(ED25519_SPKI + raw_key).decode()
    path.write_text(f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n")
    return path


def ed25519_verify(pem: Path, message: bytes, signature: bytes, tmp: Path) -> bool:
    (tmp / "msg").write_bytes(message)
    (tmp / "msg.sig").write_bytes(signature)
    r = openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(pem), "-rawin",
                "-in", str(tmp / "msg"), "-sigfile", str(tmp / "msg.sig"))  # fmt: skip
    return r.returncode == 0 and "Signature Verified Successfully" in r.stdout


def check_witnesses(
    text: str, lines: list[str], vkeys: list[str], tmp: Path
) -> tuple[list[str], list[str]]:
    """(les témoins dont la cosignature vérifie, les échecs). C2SP tlog-cosignature : la
    ligne est « — <nom> base64(id ‖ horodatage sur 8 octets ‖ signature Ed25519) », l'id
    SHA-256(nom ‖ 0x0A ‖ 0x04 ‖ clé)[:4], la signature porte sur « cosignature/v1\\n »,
    « time <horodatage>\\n » puis le texte du point de contrôle."""
    good: list[str] = []
    bad: list[str] = []
    for vkey in vkeys:
        name, key_id, key = read_vkey(vkey, 0x04, f"{vkey[:60]!r}", "une clé de témoin")
        pem = pem_of(key, tmp / f"witness-{key_id.hex()}.pem")
        for line in lines:
            who, _, b64 = line[len(DASH) :].partition(" ")
            sig = base64.b64decode(b64, validate=True)
            if who != name or sig[:4] != key_id:
                continue
            t = int.from_bytes(sig[4:12], "big")
            message = b"cosignature/v1\ntime %d\n" % t + text.encode()
            if len(sig) != 76 or not ed25519_verify(pem, message, sig[12:], tmp):
                bad.append(f"la cosignature du témoin {name} est fausse")
            elif name not in good:
                good.append(name)
    return good, bad


def check_checkpoint(b: Bundle, vkey: str, tmp: Path) -> tuple[int, bytes]:
    name, key_id, key = read_vkey(vkey, 0x01, "vault.vkey", "une clé Ed25519 de note signée")
    pem = pem_of(key, tmp / "vault.pem")
    note = b.get("checkpoint.txt").decode("utf-8")
    origin, size, root, text, sigs = parse_checkpoint(note)
    if origin != name:
        raise Failed(f"le point de contrôle est celui de {origin!r}, pas du coffre {name!r}")
    mine = [s for n, s in sigs if n == name and s[:4] == key_id]
    if not mine:
        raise Failed("checkpoint.txt n'est pas signé par la clé du coffre")
    if not ed25519_verify(pem, text.encode(), mine[0][4:], tmp):
        raise Failed("la signature du point de contrôle est fausse (openssl pkeyutl -verify)")
    return size, root


def signed_by_vault(note: str, vkey: str) -> bytes:
    """La note telle que le coffre l'a signée (son texte et sa ligne de signature, sans
    les cosignatures des témoins) : ce que checkpoint.tsr horodate."""
    name = vkey.strip().partition("+")[0]
    text, lines = signature_lines(note)
    mine = [x for x in lines if x.startswith(f"{DASH}{name} ")]
    return (text + "\n" + "".join(x + "\n" for x in mine)).encode()


def check_token(
    name: str, data: bytes, digest: bytes, ca: Path, untrusted: Path, tmp: Path
) -> None:
    path = tmp / name.replace("/", "_")
    path.write_bytes(data)
    args = ["ts", "-verify", "-in", str(path), "-digest", digest.hex(), "-CAfile", str(ca)]
    if untrusted.stat().st_size:
        args += ["-untrusted", str(untrusted)]
    r = openssl(*args)
    if r.returncode != 0 or "Verification: OK" not in r.stdout:
        reason = " ".join((r.stdout + r.stderr).split())[-300:]
        raise Failed(f"{name} : openssl ts -verify refuse le jeton ({reason})")


def open_commitments(idx: int, leaf: dict[str, object], disclosures: object) -> None:
    if not isinstance(disclosures, dict):
        raise Failed(f"disclosures/{idx}.json n'est pas un objet")
    for pointer, d in disclosures.items():
        parts = pointer.lstrip("/").split("/")
        node: object = leaf
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        committed = node.get(parts[-1]) if isinstance(node, dict) else None
        if not isinstance(committed, dict) or set(committed) != {"commitment"}:
            raise Failed(f"entrée {idx} : pas d'engagement en {pointer}")
        if not isinstance(d, dict) or "salt" not in d or "value" not in d:
            raise Failed(f"disclosures/{idx}.json : divulgation {pointer} incomplète")
        salt = base64.b64decode(str(d["salt"]), validate=True)
        got = hashlib.sha256(salt + jcs(d["value"])).hexdigest()
        if not hmac.compare_digest(got, str(committed["commitment"])):
            raise Failed(f"entrée {idx} : la divulgation {pointer} n'ouvre pas l'engagement")


def check_entry(b: Bundle, idx: int, size: int, root: bytes, note: str) -> bytes:
    data = b.get(f"entries/{idx}.bin")
    leaf = load_json(data)
    if not isinstance(leaf, dict) or leaf.get("format") != LEAF_FORMAT:
        raise Failed(f"entries/{idx}.bin n'est pas une entrée {LEAF_FORMAT}")
    if jcs(leaf) != data:
        raise Failed(f"entries/{idx}.bin n'est pas sous forme canonique RFC 8785")
    name = f"disclosures/{idx}.json"
    if name in b.files:
        open_commitments(idx, leaf, load_json(b.files[name]))
    h = leaf_hash(data)
    text = b.get(f"proofs/{idx}.tlog-proof").decode("utf-8")
    head, sep, proof_note = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or lines[0] != PROOF_HEADER:
        raise Failed(f"proofs/{idx}.tlog-proof n'est pas au format {PROOF_HEADER}")
    lines = lines[1:]
    if lines and lines[0].startswith("extra "):
        lines = lines[1:]
    if not lines or lines[0] != f"index {idx}":
        raise Failed(f"proofs/{idx}.tlog-proof ne prouve pas l'entrée {idx}")
    proof = [base64.b64decode(x, validate=True) for x in lines[1:]]
    if proof_note != note:
        raise Failed(f"proofs/{idx}.tlog-proof se rapporte à un autre point de contrôle")
    if root_from_inclusion(idx, size, h, proof) != root:
        raise Failed(f"entrée {idx} : la preuve d'inclusion ne mène pas à la racine signée")
    return h


def check_witness_quorum(
    b: Bundle, note: str, vkeys: list[str], quorum: int | None, say: Any, tmp: Path
) -> None:
    """Les cosignatures des témoins : avec --witness-vkey (ou --witness-quorum), le quorum
    est exigé ; avec les seules clés de la piste (witnesses.vkey), il est signalé."""
    explicit = bool(vkeys) or quorum is not None
    keys = vkeys or [k for k in b.files.get("witnesses.vkey", b"").decode().splitlines() if k]
    text, lines = signature_lines(note)
    if not keys:
        if len(lines) > 1:
            print("NOTE   des cosignatures de témoins, non vérifiées : donnez --witness-vkey")
        return
    good, bad = check_witnesses(text, lines, keys, tmp)
    for why in bad:
        say(False, why)
    need = quorum if quorum is not None else max(1, (len(keys) + 1) // 2)
    said = (
        f"point de contrôle cosigné par {len(good)} témoin(s) sur {len(keys)} "
        f"({', '.join(good) or 'aucun'}) ; le quorum est {need}"
    )
    if len(good) >= need:
        say(True, said)
    elif explicit:
        say(False, said + " : ce point de contrôle n'est pas témoigné")
    else:
        print("NOTE   " + said + " (clés des témoins prises dans la piste)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Vérifie une piste d'audit Horodate.")
    ap.add_argument("bundle", nargs="?", default=".", type=Path)
    ap.add_argument("--ca", type=Path, help="les racines de l'horodateur (défaut : certs/ca.pem)")
    ap.add_argument("--vkey", type=Path, help="la clé du coffre (défaut : vault.vkey)")
    ap.add_argument("--witness-vkey", action="append", default=[],
                    help="la clé d'un témoin (cosignature/v1), autant de fois que de témoins "
                         "(défaut : witnesses.vkey de la piste)")  # fmt: skip
    ap.add_argument("--witness-quorum", type=int,
                    help="combien de ces témoins doivent avoir cosigné (défaut : la moitié, "
                         "arrondie au-dessus)")  # fmt: skip
    args = ap.parse_args(argv)
    ok = True

    def say(good: bool, what: str) -> None:
        nonlocal ok
        ok &= good
        print(("OK     " if good else "ÉCHEC  ") + what, flush=True)

    try:
        b = Bundle(args.bundle)
        say(True, check_sums(b))
    except (Failed, OSError, zipfile.BadZipFile, ValueError) as e:
        say(False, str(e))
        return 1
    with tempfile.TemporaryDirectory(prefix="horodate-check-") as t:
        tmp = Path(t)
        ca = tmp / "ca.pem"
        ca.write_bytes(args.ca.read_bytes() if args.ca else b.get("certs/ca.pem"))
        untrusted = tmp / "tsa.pem"
        untrusted.write_bytes(b.files.get("certs/tsa.pem", b""))
        try:
            vkey = args.vkey.read_text() if args.vkey else b.get("vault.vkey").decode()
            size, root = check_checkpoint(b, vkey, tmp)
            say(
                True, f"point de contrôle signé par le coffre : {size} entrées, racine {root.hex()}"
            )
            note = b.files["checkpoint.txt"].decode("utf-8")
            if "checkpoint.tsr" in b.files:
                digest = hashlib.sha256(signed_by_vault(note, vkey)).digest()
                check_token("checkpoint.tsr", b.files["checkpoint.tsr"], digest, ca, untrusted, tmp)
                say(True, "point de contrôle horodaté (openssl ts -verify)")
            check_witness_quorum(b, note, args.witness_vkey, args.witness_quorum, say, tmp)
        except (Failed, ValueError) as e:
            say(False, str(e))
            return 1
        indices = sorted(int(n[8:-4]) for n in b.files if re.fullmatch(r"entries/[0-9]+\.bin", n))
        hashes: dict[int, bytes] = {}
        for idx in indices:
            try:
                hashes[idx] = check_entry(b, idx, size, root, note)
            except (Failed, ValueError) as e:
                say(False, str(e))
        say(len(hashes) == len(indices), f"{len(hashes)}/{len(indices)} entrées : canoniques, "
            "divulgations ouvertes, incluses dans l'arbre signé")  # fmt: skip

        def token(idx: int) -> str | None:
            name = f"tokens/{idx}.tsr"
            if name not in b.files:
                return None
            try:
                check_token(name, b.files[name], hashes[idx], ca, untrusted, tmp)
                return ""
            except Failed as e:
                return str(e)

        with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
            results = dict(zip(hashes, pool.map(token, hashes), strict=True))
        bad = {i: r for i, r in results.items() if r}
        pending = [i for i, r in results.items() if r is None]
        for i in sorted(bad):
            say(False, bad[i])
        sealed = len(results) - len(bad) - len(pending)
        say(
            not bad, f"{sealed} jetons RFC 3161 vérifiés par openssl sur l'empreinte de leur entrée"
        )
        if pending:
            print(
                f"NOTE   {len(pending)} entrée(s) sans jeton (en attente de scellement) : {pending}"
            )
        try:
            report = load_json(b.get("report.json"))
            listed = {int(e["index"]): e["leaf_hash"] for e in report["entries"]}  # type: ignore[index]
            if listed != {i: h.hex() for i, h in hashes.items()} or set(listed) != set(indices):
                raise Failed("report.json ne décrit pas exactement les entrées de la piste")
            say(True, "report.json décrit exactement ces entrées")
        except (Failed, KeyError, TypeError, ValueError) as e:
            say(False, str(e))
    print("RÉSULTAT : la piste est intègre" if ok else "RÉSULTAT : la piste NE se vérifie PAS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
