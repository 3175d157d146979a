"""What lies beyond the host: the NTP servers answering, and the running appliance's own
verdict (its ``/health``).

Both are asked through callables the command passes in (an ntplib query, an HTTP GET), so
that the checks stay pure and the tests answer for the network.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .findings import Finding, Verdict


class ProbeError(Exception):
    """A peer did not answer; the message says how."""


@dataclass(frozen=True, slots=True)
class NtpAnswer:
    stratum: int
    leap: int  # RFC 5905 §7.3 LI: 3 = the server's clock is not synchronised
    offset_s: float


NtpQuery = Callable[[str, int, float], NtpAnswer]  # (host, port, timeout_s); ProbeError


def ntplib_query(host: str, port: int, timeout_s: float) -> NtpAnswer:
    """One NTP (v4) exchange through ntplib."""
    import ntplib

    try:
        reply = ntplib.NTPClient().request(host, version=4, port=port, timeout=timeout_s)
    except (ntplib.NTPException, OSError) as e:
        raise ProbeError(str(e) or type(e).__name__) from e
    return NtpAnswer(stratum=int(reply.stratum), leap=int(reply.leap), offset_s=reply.offset)


def check_ntp(
    servers: Sequence[tuple[str, int]], query: NtpQuery, timeout_s: float
) -> list[Finding]:
    """Each server asked once, all at once; every answer awaited ``timeout_s`` plus a
    second for the name lookup, which ntplib cannot bound."""
    if not servers:
        return [
            Finding(
                "ntp",
                Verdict.WARN,
                "no NTP servers configured: only the GPS and the RTC can make a quorum",
                (
                    'add `servers = ["0.debian.pool.ntp.org", "1.debian.pool.ntp.org"]` under '
                    "[ntp] in /etc/horodate/appliance.toml",
                ),
            )
        ]
    answers: dict[int, NtpAnswer | str] = {}

    def ask(i: int, host: str, port: int) -> None:
        try:
            answers[i] = query(host, port, timeout_s)
        except ProbeError as e:
            answers[i] = str(e)

    threads = [
        threading.Thread(target=ask, args=(i, h, p), daemon=True, name=f"doctor-ntp-{i}")
        for i, (h, p) in enumerate(servers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s + 1.0)
    reachable = sum(isinstance(a, NtpAnswer) for a in answers.values())
    findings = []
    for i, (host, port) in enumerate(servers):
        name = f"ntp {host}" + (f":{port}" if port != 123 else "")
        answer = answers.get(i, f"no answer in {timeout_s:g} s")
        if isinstance(answer, str):
            findings.append(
                Finding(
                    name,
                    Verdict.WARN if reachable else Verdict.FAIL,
                    f"unreachable: {answer}",
                    (
                        f"outgoing UDP to port {port} allowed? `nc -uzv {host} {port}`; "
                        f"name resolves? `getent hosts {host}`",
                    ),
                )
            )
        elif answer.leap == 3 or not 1 <= answer.stratum <= 15:
            findings.append(
                Finding(
                    name,
                    Verdict.WARN,
                    f"answers unsynchronised (stratum {answer.stratum}, LI {answer.leap})",
                    ("choose another server under [ntp] servers",),
                )
            )
        else:
            findings.append(
                Finding(
                    name,
                    Verdict.OK,
                    f"stratum {answer.stratum}, host clock {answer.offset_s * 1e3:+.1f} ms",
                )
            )
    return findings


Health = Callable[[], Mapping[str, Any]]  # the /health document; ProbeError


def check_ensemble(health: Health, url: str) -> Finding:
    """The running appliance's verdict: issuing synchronised, in holdover, or refusing."""
    try:
        document = health()
    except ProbeError as e:
        return Finding(
            "clock",
            Verdict.WARN,
            f"no appliance answering at {url}: {e}",
            ("`sudo systemctl status horodate-appliance`; `journalctl -u horodate-appliance -e`",),
        )
    state = str(document.get("state", "?"))
    bound = document.get("bound_s")
    details = tuple(
        f"{s.get('name')}: {s.get('status')}"
        + "".join(f" — {part}" for part in (s.get("reason"), s.get("driver")) if part)
        for s in document.get("sources") or ()
        if s.get("status") != "selected"
    )
    if document.get("issuing"):
        summary = f"{state}, issuing" + (f", bound ±{bound * 1e3:.1f} ms" if bound else "")
        if state == "holdover":
            return Finding(
                "clock",
                Verdict.WARN,
                summary + ": no quorum, the bound grows until tokens stop",
                ("bring a source back: the sources listed above; `horodate status`",),
                details,
            )
        return Finding("clock", Verdict.OK, summary, details=details)
    reason = document.get("reason") or ""
    return Finding(
        "clock",
        Verdict.FAIL,
        f"{state}, NOT issuing" + (f": {reason}" if reason else ""),
        ("the sources listed above; `horodate status`; docs/clock.md says what this state means",),
        details,
    )
