"""``GET /status``: the technician's page, read in a real headless Chromium.

The appliance runs on simulated sources (``tests/clock/world.py``: GPS, NTP and a DS3231,
truth and faults on a virtual clock) for an hour or more of simulated time in a second or
two, its history recorded every 10 s as the application's own timer records it; then the
real application is served as in production (the fast lane on a loopback socket) and
Chromium loads ``/status``: its DOM is checked, and a screenshot of each state — issuing,
holdover, refusing — is saved (the session's ``status-screenshots`` folder, printed).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from appliance.clock import Assessment, ClockState, Policy, SourceReport, SourceStatus
from appliance.clock.history import ClockHistory, HistoryLimits, Verdict
from appliance.clock.timekeeper import Timekeeper
from appliance.http.app import create_app
from appliance.http.app_keys import ServerConfig
from appliance.http.status_page import HISTORY, render_page
from drivers.sample import SourceKind
from tests import chromium
from tests.clock.world import NS, Fault, World, WorldConfig, run
from timestamping import Digest, build_request

from .conftest import Served, VirtualClock

TSQ = {"Content-Type": "application/timestamp-query"}


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: the session's tmp dir (pytest keeps the last three), or
    ``$HORODATE_SCREENSHOTS`` to keep a set."""
    kept = os.environ.get("HORODATE_SCREENSHOTS")
    # one folder for the session, whichever test module asks first (the vault's imports this)
    folder = Path(kept) if kept else tmp_path_factory.getbasetemp() / "status-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nstatus page screenshots: {folder}")
    return folder


@dataclass(frozen=True)
class Story:
    """Simulated sources for ``minutes``, then the page: the clock's ``state`` and the
    banner's ``verdict`` expected."""

    name: str
    minutes: float
    faults: tuple[Fault, ...]
    state: str
    verdict: str
    tokens: int = 0


STORIES = [
    Story("issuing", 150, (), "synchronised", "issuing", tokens=3),
    # GPS and RTC go quiet 12 minutes before the end: NTP alone is no quorum, the clock
    # coasts on its prediction and the bound grows.
    Story(
        "holdover",
        90,
        (Fault("gps", 78 * 60, silent=True), Fault("rtc", 78 * 60, silent=True)),
        "holdover",
        "holdover",
    ),
    # GPS and NTP jump together by 2.5 s 5 minutes before the end: an alarm, no tokens.
    Story(
        "refusing",
        90,
        (Fault("gps", 85 * 60, offset_s=2.5), Fault("ntp", 85 * 60, offset_s=2.5)),
        "alarm",
        "refusing",
    ),
]


def simulate(story: Story, timekeeper: Timekeeper, clock: VirtualClock, app: Any) -> None:
    """Run the world for the story, recording the history every 10 s (the application's
    timer's period); the virtual clock ends at the story's end. The world's UTC ends at the
    host's now, so the host-clock offset on the page is small, as on a healthy appliance."""
    span_ns = int(story.minutes * 60 * NS)
    world = World(
        WorldConfig(
            start_utc_ns=time.time_ns() - span_ns,
            gps_period_s=4.0,
            ntp_poll_s=64.0,
            faults=story.faults,
        )
    )
    history = app[HISTORY]
    for step in run(world, timekeeper.ensemble, story.minutes * 60, step_s=10.0):
        history.record(step.assessment)
    clock.now_ns = world.mono(story.minutes * 60)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("story", STORIES, ids=[s.name for s in STORIES])
async def test_the_page_in_chromium_in_each_state(
    story: Story,
    clock: VirtualClock,
    tsa_service: Callable[..., Any],
    serve: Callable[..., Any],
    screenshots: Path,
) -> None:
    timekeeper = Timekeeper(Policy(), clock=clock)
    app = create_app(ServerConfig(), timekeeper, tsa=tsa_service())
    simulate(story, timekeeper, clock, app)
    assert timekeeper.assess().state.value == story.state
    served: Served = await serve(app)
    for i in range(story.tokens):
        q = build_request(hashlib.sha256(b"%d" % i).digest(), digest=Digest.SHA256, nonce=i + 1)
        assert (await served.post("/tsa", data=q.der, headers=TSQ)).status == 200

    resp = await served.get("/status")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]

    shot = screenshots / f"{story.name}.png"
    dom = await chromium.load(served.url("/status"), screenshot=shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    banner = dom.one("header", "banner")
    assert banner.classes == {"banner", story.verdict}
    assert banner.attrs["data-verdict"] == story.verdict
    assert story.verdict.upper() in "".join(banner.text)
    assert f"clock {story.state}" in "".join(banner.text)
    refresh = [m for m in dom.all("meta") if m.attrs.get("http-equiv") == "refresh"]
    assert [m.attrs["content"] for m in refresh] == ["10"]
    assert dom.external_references() == []
    assert dom.all("script") == []

    facts = {e.attrs["data-fact"]: "".join(e.text) for e in dom.all("td") if "data-fact" in e.attrs}
    assert facts["clock state"] == story.state
    assert "±" in facts["bound"] and facts["utc"].endswith(facts["bound"])
    assert "from UTC" in facts["host clock"]
    assert facts["tokens"].startswith(f"{story.tokens} token")
    assert facts["tsa certificate"] == "expires in 100.0 days"
    if story.verdict == "refusing":
        assert "alarm" in facts["why"]
    names = ["gps0", "ntp:a", "rtc0"]
    rows = ["".join(r.text) for r in dom.all("tr")]
    for name in names:
        assert any(row.startswith(name) for row in rows), f"no row for {name}"

    plots = dom.all("svg", "plot")
    assert len(plots) == 4  # offsets and bound, last hour and last day
    lines = dom.all("polyline", "line")
    series = {p.attrs["data-series"] for p in lines}
    assert set(names) | {"bound"} <= series
    for p in lines:
        assert len(p.attrs["points"].split()) >= 2
    assert dom.all("polygon", "band")  # the ±bound band
    strips = {r.attrs["class"] for r in dom.all("rect") if r.attrs["class"].startswith("strip-")}
    assert f"strip-{story.verdict}" in strips
    if story.verdict != "issuing":
        assert "strip-issuing" in strips  # it was issuing before the fault


async def test_the_history_is_recorded_by_the_timer_never_by_a_reader(
    clock: VirtualClock, serve: Callable[..., Any]
) -> None:
    timekeeper = Timekeeper(Policy(), clock=clock)
    app = create_app(ServerConfig(), timekeeper)
    history = app[HISTORY]
    assert len(history) == 0
    served: Served = await serve(app)
    assert len(history) == 1  # the timer's first point, at startup
    for _ in range(3):
        clock.advance(5)  # the timer's next tick is 10 s of real time away
        assert (await served.get("/status")).status == 200
        assert (await served.get("/health")).status == 503
    assert len(history) == 1
    assert history.hour(clock())[0].verdict is Verdict.REFUSING  # starting: no sources yet


def _assessment(m: int, sources: int, offset_ns: int, *, issuing: bool = True) -> Assessment:
    return Assessment(
        mono_ns=m,
        state=ClockState.SYNCHRONISED if issuing else ClockState.ALARM,
        issuing=issuing,
        reason="" if issuing else "alarm: they jumped",
        utc_ns=m,
        bound_ns=1_000_000 + offset_ns,
        frequency_ppm=None,
        skew_ppm=None,
        sources=tuple(
            SourceReport(
                name=f"ntp:server-{i:02d}.example.org",
                kind=SourceKind.NTP,
                status=SourceStatus.SELECTED,
                reason="",
                offset_ns=offset_ns + i,
                bound_ns=2_000_000,
                last_mono_ns=m,
                samples=1,
            )
            for i in range(sources)
        ),
    )


def test_the_history_is_bounded_in_points_and_memory() -> None:
    """A day and more of points, with more sources than are kept: the rings stay at their
    length, and what the history holds stays under 512 KiB (the figure in
    appliance/clock/history.py; under 256 KiB with the usual three or four sources)."""
    history = ClockHistory()
    limits = history.limits
    m = 10 * NS
    for i in range(int(1.1 * 86_400) // 60):  # a point a minute: 5 in each day bucket
        m += 60 * NS
        history.record(_assessment(m, 20, (i % 97) * 1000 + 10**9))
    assert len(history) == limits.hour_points  # the ring is full (61 points in the hour)
    assert len(history.day(m)) == limits.day_points - 1  # the oldest bucket is a day and more
    assert all(len(p.offsets_ns) == limits.max_sources for p in history.day(m))
    held = _held_bytes(history)
    assert held < 512 * 1024, f"{held} bytes"
    usual = ClockHistory()
    for i in range(2 * 86_400 // 10):
        usual.record(_assessment((i + 1) * 10 * NS, 4, (i % 97) * 1000 + 10**9))
    assert _held_bytes(usual) < 256 * 1024, f"{_held_bytes(usual)} bytes"


def _held_bytes(history: ClockHistory) -> int:
    """The bytes of every object the history's rings hold, each counted once (the enum
    members and the names, shared with the rest of the process, are not counted)."""
    seen: set[int] = set()
    total = 0
    stack: list[object] = [history._hour, history._day]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (Verdict, str)) or obj is None:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, (tuple, list, deque)):
            stack.extend(obj)
        elif hasattr(obj, "__slots__"):
            stack.extend(getattr(obj, name) for name in obj.__slots__)
    return total


def test_a_day_bucket_keeps_the_worst_of_its_points() -> None:
    history = ClockHistory(HistoryLimits(day_bucket_s=300))
    start = 3000 * NS  # a bucket boundary
    history.record(_assessment(start, 2, 5_000))
    history.record(_assessment(start + 10 * NS, 2, -90_000, issuing=False))
    history.record(_assessment(start + 20 * NS, 2, 1_000))
    history.record(_assessment(start + 20 * NS, 2, 7_000_000))  # not after the last: ignored
    history.record(_assessment(start + 300 * NS, 2, 3_000))  # the next bucket
    first, second = history.day(start + 300 * NS)
    assert first.mono_ns == start and first.verdict is Verdict.REFUSING
    assert first.offset_of("ntp:server-00.example.org") == -90_000
    assert first.bound_ns == 1_005_000
    assert second.verdict is Verdict.ISSUING and len(history.hour(start + 300 * NS)) == 4


def test_every_value_on_the_page_is_escaped() -> None:
    evil = "<script>alert('x')</script>&"
    document = {
        "state": "alarm",
        "issuing": False,
        "reason": evil,
        "utc": evil,
        "offset_s": None,
        "bound_s": None,
        "sources": [
            {
                "name": "ntp:<b>evil</b>",
                "status": "<i>selected</i>",
                "reason": evil,
                "driver": '"><img src=x>',
                "offset_s": None,
                "bound_s": None,
                "age_s": None,
            }
        ],
        "tsa": {"tokens_granted": 0, "requests_refused": 0, "issuance_logs_stopped": 0},
    }
    page = render_page(document, ClockHistory(), now_ns=10 * NS, max_error_s=1.0)
    for raw in ("<script>", "<b>evil", "<i>selected", "<img"):
        assert raw not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in page
    assert "&quot;&gt;&lt;img src=x&gt;" in page
    assert 'class="banner refusing"' in page


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_simulated_appliance_serves_its_page(
    tmp_path: Path, serve: Callable[..., Any], screenshots: Path
) -> None:
    """``horodate appliance --simulate``'s application as assembled for production (the
    simulated GPS on a pty, NTP on UDP, the DS3231 on its bus): once it issues, the page
    says so, and its timer has been recording since start-up."""
    from appliance.config import ApplianceConfig
    from appliance.runtime.assembly import build_app

    app = build_app(ApplianceConfig(simulate=True, data_dir=tmp_path / "appliance"))
    served: Served = await serve(app)
    deadline = time.monotonic() + 60
    while (await served.get("/health")).status != 200:
        assert time.monotonic() < deadline, "the simulated appliance never issued"
        await asyncio.sleep(0.5)
    dom = await chromium.load(served.url("/status"), screenshot=screenshots / "simulated.png")
    assert dom.one("header", "banner").classes == {"banner", "issuing"}
    assert len(dom.all("svg", "plot")) == 4 and dom.external_references() == []
    assert len(app[HISTORY]) >= 1  # recorded by the timer alone: nobody read the page before


def test_a_source_far_off_runs_along_the_edge_and_does_not_flatten_the_others() -> None:
    from appliance.http import svg_plot

    history = ClockHistory()
    for i in range(30):
        a = _assessment((i + 1) * 10 * NS, 2, 0)
        far = replace(a.sources[1], offset_ns=5 * NS)  # a GPS 5 s off beside a good source
        history.record(replace(a, bound_ns=20_000_000, sources=(a.sources[0], far)))
    now = 300 * NS
    names = ["ntp:server-00.example.org", "ntp:server-01.example.org"]
    svg = svg_plot.offset_plot(history.hour(now), names, svg_plot.hour_window(now, 10), "t")
    assert ">+100 ms<" in svg and ">−100 ms<" in svg  # 4 × the 20 ms bound, rounded up
    dom = chromium.Dom.parse(svg)
    top, bottom = svg_plot.TOP, svg_plot.TOP + svg_plot.PLOT_H
    for line in dom.all("polyline"):
        ys = [float(xy.split(",")[1]) for xy in line.attrs["points"].split()]
        assert all(top <= y <= bottom for y in ys)
    (far_line,) = [p for p in dom.all("polyline") if p.attrs["data-series"] == names[1]]
    assert {float(xy.split(",")[1]) for xy in far_line.attrs["points"].split()} == {top}
    assert "no history yet" in svg_plot.bound_plot([], 1.0, svg_plot.day_window(now, 300), "t")
