"""C2SP signed notes and checkpoints: the Go reference's known answer, round trips, tampering."""

from __future__ import annotations

import pytest

from daemon.note import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    open_note,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)
from daemon.witness.cosignature import CosignatureVerifier, Cosigner

# The example of golang.org/x/mod/sumdb/note (its note_test.go), the reference the C2SP
# signed-note specification follows.
VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
SIG = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
NOTE = TEXT + "\n— PeterNeumann " + SIG + "\n"


def test_the_go_reference_vector_signs_and_opens_byte_for_byte() -> None:
    signer = Signer.from_key_string(SKEY)
    assert signer.key_string() == SKEY
    assert signer.verifier().key_string() == VKEY
    assert sign_note(TEXT, [signer]) == NOTE  # Ed25519 is deterministic
    text, names = open_note(NOTE, [Verifier.from_key_string(VKEY)])
    assert (text, names) == (TEXT, ["PeterNeumann"])


@pytest.mark.parametrize("where", range(0, len(NOTE) - 1, 7))
def test_any_changed_character_is_refused(where: int) -> None:
    ch = NOTE[where]
    if ch == "\n":
        return
    bad = NOTE[:where] + ("A" if ch != "A" else "B") + NOTE[where + 1 :]
    with pytest.raises(NoteError):
        open_note(bad, [Verifier.from_key_string(VKEY)])


def test_unknown_keys_are_ignored_but_a_note_needs_one_known() -> None:
    other = Signer.generate("other.example/log")
    both = sign_note(TEXT, [other]) + NOTE.split("\n\n")[1]
    _, names = open_note(both, [Verifier.from_key_string(VKEY)])
    assert names == ["PeterNeumann"]
    with pytest.raises(NoteError, match="no known key"):
        open_note(sign_note(TEXT, [other]), [Verifier.from_key_string(VKEY)])


@pytest.mark.parametrize(
    "key",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space
        "PeterNeumann+c74f20a3+ApRc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # type 2
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a3+!!!!",
    ],
)
def test_malformed_verifier_keys_are_refused(key: str) -> None:
    with pytest.raises(NoteError):
        Verifier.from_key_string(key)


def test_a_cosignature_key_is_refused_as_a_note_key_and_the_reverse() -> None:
    """The signature type byte keeps the keys apart (c2sp.org/signed-note): a witness's
    cosignature/v1 key (type 0x04) is no note key (type 0x01), and a note key no witness's."""
    cosigner = Cosigner.generate("witness.example/a")
    signer = Signer.generate("witness.example/a")
    with pytest.raises(NoteError, match="type 0x01"):
        Verifier.from_key_string(cosigner.verifier().key_string())
    with pytest.raises(NoteError, match="type 0x01"):
        Signer.from_key_string(cosigner.key_string())
    with pytest.raises(NoteError, match="type 0x04"):
        CosignatureVerifier.from_key_string(signer.verifier().key_string())
    with pytest.raises(NoteError, match="type 0x04"):
        Cosigner.from_key_string(signer.key_string())
    with pytest.raises(NoteError, match="not a note key"):
        sign_note(TEXT, [cosigner.key])
    with pytest.raises(NoteError, match="not a note key"):
        open_note(NOTE, [Verifier.from_key_string(VKEY), cosigner.verifier().key])


def test_checkpoints_round_trip_and_are_parsed_strictly() -> None:
    signer = Signer.generate("vault.example/horodate")
    cp = Checkpoint(origin="vault.example/horodate", size=42, root=bytes(range(32)))
    note = sign_checkpoint(cp, signer)
    assert note.startswith(
        "vault.example/horodate\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n— "
    )
    assert verify_checkpoint(note, signer.verifier()) == cp
    for text in (
        "o\n042\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "o\n1\nAAEC\n",
        "\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "o\n1\n",
    ):
        with pytest.raises(NoteError):
            Checkpoint.parse(text)
    impostor = Signer.generate("vault.example/horodate")
    with pytest.raises(NoteError):
        verify_checkpoint(sign_checkpoint(cp, impostor), signer.verifier())
