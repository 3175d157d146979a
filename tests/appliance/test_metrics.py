"""The Prometheus text exposition, read back by Prometheus's own parser."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.http.exposition import Exposition
from appliance.issuance.issuer import TsaTally


def test_a_histogram_is_written_cumulative_with_sum_and_count() -> None:
    e = Exposition()
    e.add("demo_total", "counter", "A counter before it", 3)
    e.histogram("demo_seconds", "Durations", (0.001, 0.5, 2), [4, 0, 1, 2], 7.25)
    text = e.render()
    assert 'demo_seconds_bucket{le="0.001"} 4.0\n' in text
    assert 'demo_seconds_bucket{le="0.5"} 4.0\n' in text
    assert 'demo_seconds_bucket{le="2.0"} 5.0\n' in text
    assert 'demo_seconds_bucket{le="+Inf"} 7.0\n' in text

    families = {f.name: f for f in text_string_to_metric_families(text)}
    histogram = families["demo_seconds"]
    assert histogram.type == "histogram" and histogram.documentation == "Durations"
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.samples}
    assert samples[("demo_seconds_bucket", "+Inf")] == samples[("demo_seconds_count", None)] == 7
    assert samples[("demo_seconds_sum", None)] == 7.25
    assert [float(le) for name, le in samples if name.endswith("_bucket")] == [
        0.001,
        0.5,
        2,
        math.inf,
    ]
    assert families["demo"].samples[0].value == 3  # the counter family is untouched


def test_labels_are_escaped_and_a_family_without_a_value_is_declared_only() -> None:
    e = Exposition()
    e.add("demo_offset_seconds", "gauge", "Offset", 0.25, {"source": 'gnss "A"\\1'})
    e.add("demo_unknown", "gauge", "Not known right now", None)
    e.add("demo_offset_seconds", "gauge", "Offset", -1.5, {"source": "ntp"})
    families = {f.name: f for f in text_string_to_metric_families(e.render())}
    offsets = {s.labels["source"]: s.value for s in families["demo_offset_seconds"].samples}
    assert offsets == {'gnss "A"\\1': 0.25, "ntp": -1.5}
    assert families["demo_unknown"].type == "gauge" and families["demo_unknown"].samples == []
    with pytest.raises(ValueError, match="unsupported metric type"):
        e.add("demo_summary", "summary", "No", 1)


def test_a_histogram_needs_one_count_per_bucket_and_one_over() -> None:
    with pytest.raises(ValueError, match="3 bounds need 4 counts"):
        Exposition().histogram("x_seconds", "X", (1, 2, 3), [1, 2, 3], 0)


def test_tallies_add_their_commit_histograms_bucket_by_bucket() -> None:
    total = TsaTally()
    total.add(TsaTally(log_commit_counts=[1, 2, 0], log_commit_seconds=0.5, log_slow_commits=1))
    total.add(TsaTally(log_commit_counts=[0, 1, 4], log_commit_seconds=0.25))
    total.add(TsaTally())  # a process without an issuance log
    assert total.log_commit_counts == [1, 3, 4]
    assert total.log_commit_seconds == 0.75 and total.log_slow_commits == 1
