"""Serial numbers: unique across restarts and a real ``kill -9``; corrupt state refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.issuance.serials import (
    MAX_SERIAL_BITS,
    SerialAllocator,
    SerialError,
    SerialState,
    split_serial,
)

REPO = Path(__file__).resolve().parents[2]


def _check_serials(serials: list[int]) -> None:
    assert len(serials) == len(set(serials)), "duplicate serial numbers"
    for s in serials:
        assert 0 < s < 1 << MAX_SERIAL_BITS


def test_missing_state_is_refused_unless_created(tmp_path: Path) -> None:
    path = tmp_path / "serials"
    with pytest.raises(SerialError, match="not found"):
        SerialAllocator(path)
    assert not path.exists()
    with SerialAllocator.init(path) as alloc:
        assert alloc.next() > 0
    with pytest.raises(SerialError, match="already exists"):
        SerialAllocator.init(path)


def test_unique_across_restarts_with_gaps_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "serials"
    seen: list[int] = []
    instance_ids = set()
    for _ in range(5):
        with SerialAllocator(path, block_size=100, create=True) as alloc:
            instance_ids.add(alloc.instance_id)
            seen.extend(alloc.next() for _ in range(250))
    _check_serials(seen)
    assert len(instance_ids) == 1, "the instance id belongs to the state, not to a run"
    parts = [split_serial(s) for s in seen]
    assert {instance for instance, _, _ in parts} == instance_ids
    assert len({tag for _, tag, _ in parts}) == 5, "a run tag per start"
    counters = [counter for _, _, counter in parts]
    # Each run resumes at the persisted high-water mark: counters strictly increase.
    assert counters == sorted(counters)
    assert len(set(counters)) == len(counters)


def test_block_reserved_before_first_serial_is_handed_out(tmp_path: Path) -> None:
    path = tmp_path / "serials"
    with SerialAllocator(path, block_size=10, create=True) as alloc:
        for _ in range(25):
            counter = alloc.next() & ((1 << 64) - 1)
            on_disk = SerialState.decode(path.read_bytes()).next_counter
            assert counter < on_disk, "a serial left before its block was persisted"


def test_second_allocator_on_same_state_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "serials"
    with SerialAllocator(path, create=True), pytest.raises(SerialError, match="in use"):
        SerialAllocator(path)


def test_thread_safe_no_duplicates(tmp_path: Path) -> None:
    alloc = SerialAllocator(tmp_path / "serials", block_size=1000, create=True)
    out: list[list[int]] = [[] for _ in range(8)]

    def work(i: int) -> None:
        out[i].extend(alloc.next() for _ in range(5000))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    alloc.close()
    _check_serials([s for chunk in out for s in chunk])
    assert sum(map(len, out)) == 40000


def test_fast_enough_for_10k_tokens_per_second(tmp_path: Path) -> None:
    with SerialAllocator(tmp_path / "serials", create=True) as alloc:
        n = 200_000
        t0 = time.perf_counter()
        for _ in range(n):
            alloc.next()
        rate = n / (time.perf_counter() - t0)
    # The requirement is >= 1e6/s amortised on an idle core; the 2-core test box is shared,
    # so assert a conservative floor that still catches an fsync per serial (~1e3/s).
    assert rate > 200_000, f"{rate:.0f} serials/s"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"horodate-serials 1\ninstance 00000000000000ab\nnext 1000\ncrc32 00000000\n",
        b"\xff\xfe",
    ],
)
def test_corrupt_state_is_refused_never_restarts_at_one(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "serials"
    path.write_bytes(content)
    with pytest.raises(SerialError, match="corrupt"):
        SerialAllocator(path, create=True)
    assert path.read_bytes() == content, "a corrupt state must be left for the operator"


def test_flipped_digit_in_high_water_mark_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "serials"
    SerialAllocator(path, block_size=1000, create=True).close()
    data = path.read_bytes()
    assert b"next 1001\n" in data
    path.write_bytes(data.replace(b"next 1001\n", b"next 0001\n"))
    with pytest.raises(SerialError, match="CRC mismatch"):
        SerialAllocator(path)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_state_decoder_fuzz_raises_only_serial_error(data: bytes) -> None:
    try:
        state = SerialState.decode(data)
    except SerialError:
        return
    assert state.encode() == data


@settings(max_examples=200, deadline=None)
@given(st.integers(1, (1 << 63) - 1), st.integers(1, 1 << 64))
def test_state_roundtrip(instance_id: int, next_counter: int) -> None:
    state = SerialState(instance_id=instance_id, next_counter=next_counter)
    assert SerialState.decode(state.encode()) == state


_CHILD = """
import sys
from pathlib import Path
from appliance.issuance.serials import SerialAllocator
alloc = SerialAllocator(Path(sys.argv[1]), block_size=int(sys.argv[2]), create=True)
out = sys.stdout
while True:
    out.write(f"{alloc.next()}\\n")
    out.flush()
"""


def _run_child_and_kill(path: Path, *, block_size: int, at_least: int) -> list[int]:
    """Spawn an allocating child, read serials until ``at_least`` arrived, SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(block_size)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    got: list[int] = []
    deadline = time.monotonic() + 20
    try:
        while len(got) < at_least:
            assert time.monotonic() < deadline, "child allocated too slowly"
            line = proc.stdout.readline()
            assert line.endswith(b"\n"), f"child died: rc={proc.poll()}"
            got.append(int(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-run, no clean shutdown
        rest = proc.stdout.read()
        proc.wait(timeout=10)
    # Serials printed after our last read are "received" too: keep every complete line.
    got.extend(int(x) for x in rest.split(b"\n")[:-1])
    assert proc.returncode == -signal.SIGKILL
    return got


def test_unique_across_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "serials"
    first = _run_child_and_kill(path, block_size=997, at_least=3000)
    second = _run_child_and_kill(path, block_size=997, at_least=3000)
    with SerialAllocator(path, block_size=997) as alloc:
        third = [alloc.next() for _ in range(3000)]
    everything = first + second + third
    _check_serials(everything)
    assert len(everything) >= 9000
