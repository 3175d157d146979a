"""The Prometheus text exposition (format 0.0.4) of the appliance, through prometheus-client.

Each scrape builds a fresh :class:`Exposition` from the appliance's current state (the
workers' tallies added up in the main process, the clock's assessment, the log's
commits), so there is no global registry to keep consistent: the families are built here
and prometheus-client's ``generate_latest`` writes them — its escaping, number format and
``HELP``/``TYPE`` lines, not ours.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Exposition:
    """Collects metric families, then renders them in the text format."""

    def __init__(self) -> None:
        # family name -> family; a family's samples stay together in the output even when
        # they are added interleaved with others'.
        self._families: dict[str, Metric] = {}

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
        if kind == "gauge":
            family = self._families.setdefault(name, GaugeMetricFamily(name, help_text))
            sample = name
        elif kind == "counter":
            # prometheus-client names the family without "_total" and the sample with it
            family = self._families.setdefault(name, CounterMetricFamily(name, help_text))
            sample = family.name + "_total"
        else:
            raise ValueError(f"unsupported metric type {kind!r}")
        if value is not None:
            family.add_sample(sample, dict(labels or {}), value)

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
        buckets, cumulative = [], 0
        for bound, count in zip((*bounds, math.inf), counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
        self._families[name] = HistogramMetricFamily(
            name, help_text, buckets=buckets, sum_value=total
        )

    def render(self) -> str:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(list(self._families.values())))
        return generate_latest(registry).decode()


class _Families:
    """A collector handing prometheus-client the families of one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
