"""The vault's TSA client against a real appliance, verifying tokens in another process:
what the event loop gets back is the same as when it verifies them itself — a verified
seal, or the refusal with its reasons — and a verifier that dies costs one seal, not all."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
from pathlib import Path

import pytest

from appliance.tsa.dev_pki import init_dev_pki
from tests.daemon.conftest import Appliance
from timestamping.aio_client import AsyncTsaClient, ClientPolicy
from timestamping.errors import FailInfo, TimestampingError, VerificationFailed
from timestamping.reply import ReplyRejected
from timestamping.verify import verify_reply

IN_A_PROCESS = ClientPolicy(verify_processes=1)


async def test_a_token_verified_in_another_process_is_a_verified_seal(
    appliance: Appliance,
) -> None:
    imprint = hashlib.sha256(b"entry 1").digest()
    async with AsyncTsaClient([appliance.url], appliance.ca_pem, policy=IN_A_PROCESS) as tsa:
        seal = await tsa.seal(imprint)
    assert seal.info.message_imprint == imprint
    assert seal.info.nonce is not None
    verified = verify_reply(
        seal.reply_der, message_imprint=imprint, ca_pem=appliance.ca_pem, nonce=seal.info.nonce
    )
    assert verified.info == seal.info


async def test_a_token_from_other_roots_is_refused_with_the_reason(
    appliance: Appliance, tmp_path: Path
) -> None:
    other = init_dev_pki(tmp_path / "other", now=dt.datetime.now(dt.UTC)).ca_cert.read_bytes()
    async with AsyncTsaClient([appliance.url], other, policy=IN_A_PROCESS) as tsa:
        with pytest.raises(VerificationFailed, match="certificate chain does not verify"):
            await tsa.seal(hashlib.sha256(b"entry").digest())


async def test_a_refusal_crosses_back_with_its_failinfo(appliance: Appliance) -> None:
    appliance.refusing[0] = True
    async with AsyncTsaClient([appliance.url], appliance.ca_pem, policy=IN_A_PROCESS) as tsa:
        with pytest.raises(ReplyRejected, match="timeNotAvailable") as caught:
            await tsa.seal(hashlib.sha256(b"entry").digest())
    assert caught.value.reply.fail_info == frozenset({FailInfo.timeNotAvailable})


async def test_a_verifier_killed_costs_one_seal_and_is_replaced(appliance: Appliance) -> None:
    imprint = hashlib.sha256(b"entry").digest()
    async with AsyncTsaClient([appliance.url], appliance.ca_pem, policy=IN_A_PROCESS) as tsa:
        assert tsa._verifiers is not None
        (pid,) = tsa._verifiers._processes  # the pool's one process, started on entry
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(TimestampingError, match="token-verifying process died"):
            await tsa.seal(imprint)
        seal = await tsa.seal(imprint)
        assert seal.info.message_imprint == imprint
        assert pid not in tsa._verifiers._processes
