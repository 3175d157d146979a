"""``horodate status``: what a technician reads, and its exit status."""

from __future__ import annotations

from typing import Any

from horodate.cli import main as horodate
from horodate.commands.status import render

HEALTHY: dict[str, Any] = {
    "state": "synchronised",
    "issuing": True,
    "reason": "",
    "utc": "2026-11-28T10:00:00.000000Z",
    "offset_s": 0.0021,
    "bound_s": 0.0000042,
    "frequency_ppm": -3.2,
    "skew_ppm": 0.01,
    "sources": [
        {
            "name": "pps0",
            "status": "selected",
            "offset_s": 1e-6,
            "bound_s": 5e-6,
            "reason": "",
            "age_s": 0.4,
        },
        {
            "name": "ntp:pool",
            "status": "falseticker",
            "offset_s": 2.5,
            "bound_s": 0.01,
            "reason": "outside the agreeing group",
            "age_s": 12,
            "driver": "asked to slow down: polled every 128 s",
        },
    ],
}


def test_render_reads_at_a_glance() -> None:
    text = render(HEALTHY)
    lines = text.splitlines()
    assert lines[0].startswith("ISSUING") and "synchronised" in lines[0]
    assert "±4.2 µs" in lines[1]
    assert "+2.1 ms from UTC" in lines[2]
    assert "-3.200 ppm" in text
    pps = next(line for line in lines if line.startswith("pps0"))
    ntp = next(line for line in lines if line.startswith("ntp:pool"))
    assert "selected" in pps and "+1.0 µs" in pps
    assert "falseticker" in ntp and "+2.500 s" in ntp and "outside the agreeing group" in ntp
    assert ntp.endswith("outside the agreeing group; asked to slow down: polled every 128 s")
    assert "\033[" not in text  # no colour unless on a terminal


def test_render_shows_the_tsa_workers_when_there_are_some() -> None:
    assert "TSA workers" not in render(HEALTHY)
    running = render({**HEALTHY, "tsa_workers": {"configured": 2, "alive": 2, "restarts": 0}})
    assert "TSA workers  2/2 running" in running and "restarted" not in running
    short = render(
        {**HEALTHY, "tsa_workers": {"configured": 2, "alive": 1, "restarts": 3}}, color=True
    )
    assert "1/2 running, 3 restarted" in short and "\033[31m" in short


def test_render_shows_the_tokens_and_a_stopped_issuance_log() -> None:
    counts = {"tokens_granted": 12345, "requests_refused": 7, "issuance_logs_stopped": 0}
    fine = render({**HEALTHY, "tsa": counts}, color=True)
    tsa_line = next(line for line in fine.splitlines() if "tokens granted" in line)
    assert "12,345 tokens granted, 7 refused" in tsa_line and "STOPPED" not in tsa_line
    assert "\033[31m" not in tsa_line
    stopped = render({**HEALTHY, "tsa": {**counts, "issuance_logs_stopped": 1}}, color=True)
    tsa_line = next(line for line in stopped.splitlines() if "tokens granted" in line)
    assert "1 issuance log(s) STOPPED" in tsa_line and "\033[31m" in tsa_line
    one = render({**HEALTHY, "tsa": {**counts, "tokens_granted": 1}})
    assert "1 token granted, 7 refused" in one
    assert "slow issuance-log" not in one


def test_render_shows_slow_issuance_log_commits_in_yellow() -> None:
    counts = {"tokens_granted": 9, "requests_refused": 0, "issuance_logs_stopped": 0}
    slow = render({**HEALTHY, "tsa": {**counts, "slow_commits": 1234}}, color=True)
    tsa_line = next(line for line in slow.splitlines() if "tokens granted" in line)
    assert "1,234 slow issuance-log commits (≥ 100 ms)" in tsa_line
    assert "\033[33m" in tsa_line  # a warning, not an alarm
    assert "1 slow issuance-log commit (" in render(
        {**HEALTHY, "tsa": {**counts, "slow_commits": 1}}
    )
    both = render(
        {**HEALTHY, "tsa": {**counts, "slow_commits": 2, "issuance_logs_stopped": 1}}, color=True
    )
    assert "\033[31m" in both  # a stopped log outranks slow commits


def test_render_not_issuing_says_why_in_colour() -> None:
    doc = {
        **HEALTHY,
        "issuing": False,
        "state": "alarm",
        "reason": "sources jumped",
        "utc": None,
        "bound_s": None,
        "offset_s": None,
        "sources": [],
    }
    text = render(doc, color=True)
    assert "NOT ISSUING" in text and "sources jumped" in text
    assert "\033[31m" in text
    assert "(no sources configured)" in text


def test_unreachable_appliance_exits_2(capsys: Any) -> None:
    assert horodate(["status", "--url", "http://127.0.0.1:9", "--timeout", "2"]) == 2
    assert "cannot read http://127.0.0.1:9/health" in capsys.readouterr().err


def test_render_shows_the_tsa_certificate_expiry_at_a_glance() -> None:
    counts = {"tokens_granted": 1, "requests_refused": 0, "issuance_logs_stopped": 0}

    def cert_line(days: float, expiring: bool) -> str:
        tsa = {**counts, "certificate_days_left": days, "certificate_expiring": expiring}
        text = render({**HEALTHY, "tsa": tsa}, color=True)
        return next(line for line in text.splitlines() if "TSA cert" in line)

    fine = cert_line(812.4, False)
    assert "expires in 812.4 days" in fine and "\033[32m" in fine and "renew" not in fine
    soon = cert_line(12.0, True)
    assert "expires in 12.0 days; renew it" in soon and "\033[33m" in soon
    gone = cert_line(-1.5, True)
    assert "EXPIRED 1.5 days ago: no tokens" in gone and "\033[31m" in gone
    assert "TSA cert" not in render({**HEALTHY, "tsa": counts})  # an older appliance
