"""The witnesses in Prometheus terms, read at scrape time (a prometheus-client collector)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from daemon.witnessing.submitter import Witnessing

# name (after horodate_vault_witness_), family, help, the value of a witness's /health item
# (None: no sample for that witness)
_PER_WITNESS: Final[tuple[tuple[str, type, str, Callable[[dict[str, Any]], Any]], ...]] = (
    ("cosigned_size", GaugeMetricFamily,
     "Tree size of the latest checkpoint this witness cosigned (stored)",
     lambda w: w["cosigned_size"]),
    ("cosigned_age_seconds", GaugeMetricFamily,
     "Seconds since the vault stored this witness's latest cosignature",
     lambda w: w["cosigned_age_s"]),
    ("up", GaugeMetricFamily, "1 while this witness's last add-checkpoint succeeded",
     lambda w: 1 if w["state"] == "ok" else 0),
    ("failures", CounterMetricFamily,
     "add-checkpoint attempts that gave no cosignature (refused, unreachable, bad)",
     lambda w: w["failures"]),
    ("conflicts", CounterMetricFamily, "409 answers (the witness knew another size)",
     lambda w: w["conflicts"]),
)  # fmt: skip


class WitnessCollector:
    """``horodate_vault_witness_*{witness}``, and ``horodate_vault_checkpoint_witnessed``."""

    def __init__(self, witnessing: Witnessing) -> None:
        self.witnessing = witnessing

    def collect(self) -> Iterator[Any]:
        if not self.witnessing.progress:
            return
        status = self.witnessing.status()
        for name, family, help_, value in _PER_WITNESS:
            metric = family(f"horodate_vault_witness_{name}", help_, labels=["witness"])
            for w in status["witnesses"]:
                if (v := value(w)) is not None:
                    metric.add_metric([w["name"]], float(v))
            yield metric
        witnessed = status["checkpoint_witnessed"]
        g = GaugeMetricFamily(
            "horodate_vault_checkpoint_witnessed",
            "1 when the latest checkpoint has the cosignatures the witness policy asks",
        )
        g.add_metric([], 1.0 if witnessed and witnessed["meets_policy"] else 0.0)
        yield g
