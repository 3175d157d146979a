"""Prometheus text exposition (format 0.0.4), written by hand: a handful of gauges,
counters and one histogram do not need a client library (the tests read it back with
Prometheus's own parser).

Each scrape builds a fresh :class:`Exposition` from the appliance's current state, so there
is no global registry to keep consistent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Collects metric families and renders them in the text format."""

    def __init__(self) -> None:
        # family name -> its HELP/TYPE header and samples; a family's samples stay together
        # in the output even when they are added interleaved with others'.
        self._families: dict[str, list[str]] = {}

    def add(
        self,
        name: str,
        kind: str,
        help_text: str,
        value: float | None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """One sample of metric ``name``; declares HELP/TYPE on the family's first sample.

        A ``None`` value declares the family but writes no sample (unknown right now).
        """
        if kind not in ("gauge", "counter"):
            raise ValueError(f"unsupported metric type {kind!r}")
        family = self._family(name, kind, help_text)
        if value is None:
            return
        label_text = ""
        if labels:
            label_text = (
                "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"
            )
        family.append(f"{name}{label_text} {_format_value(value)}")

    def histogram(
        self,
        name: str,
        help_text: str,
        bounds: Sequence[float],
        counts: Sequence[int],
        total: float,
    ) -> None:
        """A histogram: ``counts[i]`` observations in bucket ``i`` (at most ``bounds[i]``,
        more than the bound before), then one more count, those above the last bound;
        ``total``, their sum. Written with cumulative ``le`` buckets, ``_sum`` and
        ``_count``."""
        if len(counts) != len(bounds) + 1:
            raise ValueError(f"{name}: {len(bounds)} bounds need {len(bounds) + 1} counts")
        family = self._family(name, "histogram", help_text)
        cumulative = 0
        for bound, count in zip((*bounds, math.inf), counts, strict=True):
            cumulative += count
            family.append(f'{name}_bucket{{le="{_format_value(bound)}"}} {cumulative}')
        family.append(f"{name}_sum {_format_value(total)}")
        family.append(f"{name}_count {cumulative}")

    def _family(self, name: str, kind: str, help_text: str) -> list[str]:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        return family

    def render(self) -> str:
        return "".join(line + "\n" for family in self._families.values() for line in family)
