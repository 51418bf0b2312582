"""Prometheus metrics, read from the store and the ingest counters at scrape time.

:class:`FleetCollector` is a custom collector: nothing is kept between scrapes, and each app
registers it in its own :class:`prometheus_client.CollectorRegistry` (never the global one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from central.ingest.consumer import LAG_BUCKETS, IngestStats
from central.store.base import Store


class FleetCollector(Collector):
    """Fleet gauges from the store; the consumer's counters from :class:`IngestStats`."""

    def __init__(
        self,
        store: Store,
        stats: IngestStats | None = None,
        *,
        noncompliant: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.stats = stats
        self._noncompliant = noncompliant or (
            lambda: sum(not r.compliant for r in store.compliance())
        )

    def collect(self) -> Iterator[Metric]:
        yield from self._fleet()
        if self.stats is not None:
            yield from self._ingest(self.stats)

    def _fleet(self) -> Iterator[Metric]:
        s = self.store.summary()
        devices = GaugeMetricFamily("titik_devices", "Gateways by status", labels=["status"])
        devices.add_metric(["online"], s.online)
        devices.add_metric(["offline"], s.offline)
        yield devices
        clients = GaugeMetricFamily(
            "titik_clients", "Wi-Fi clients on online gateways, by region", labels=["region"]
        )
        for region, n in s.clients_by_region.items():
            clients.add_metric([region], n)
        yield clients
        by_kind: dict[str, int] = {}
        for a in self.store.alerts(open_only=True):
            by_kind[a.kind] = by_kind.get(a.kind, 0) + 1
        alerts = GaugeMetricFamily("titik_alerts_open", "Open alerts by kind", labels=["kind"])
        for kind, n in sorted(by_kind.items()):
            alerts.add_metric([kind], n)
        yield alerts
        yield GaugeMetricFamily(
            "titik_devices_noncompliant",
            "Gateways whose desired config versions are not all applied",
            value=self._noncompliant(),
        )
        held = GaugeMetricFamily(
            "titik_quarantine_rows", "Messages kept in the quarantine, by reason", labels=["reason"]
        )
        for reason, n in self.store.quarantine(limit=0).by_reason.items():
            held.add_metric([reason], n)
        yield held

    def _ingest(self, st: IngestStats) -> Iterator[Metric]:
        bad = dict(st.bad)
        messages = CounterMetricFamily(
            "titik_ingest_messages", "Messages handled by the consumer", labels=["result"]
        )
        messages.add_metric(["stored"], st.stored)
        messages.add_metric(["duplicate"], st.duplicates)
        messages.add_metric(["bad"], sum(bad.values()))
        yield messages
        bad_total = CounterMetricFamily(
            "titik_ingest_bad",
            "Messages central could not take (quarantined and acked), by reason",
            labels=["reason"],
        )
        for reason, n in sorted(bad.items()):
            bad_total.add_metric([reason], n)
        yield bad_total
        accepted = CounterMetricFamily(
            "titik_ingest_accepted", "Messages taken, by kind", labels=["kind"]
        )
        for kind, n in sorted(st.accepted.items()):
            accepted.add_metric([kind], n)
        yield accepted
        live = CounterMetricFamily(
            "titik_ingest_live_samples",
            "Live samples by what they did to current state: current, new_session (seq, "
            "boot or sid went back), late (older than the current state), future (stamped "
            "beyond ingest.future_tolerance_s ahead: stored, not current)",
            labels=["outcome"],
        )
        for outcome, n in sorted(st.live.items()):
            live.add_metric([outcome], n)
        yield live
        for name, doc, value in (
            ("received", "Messages received from the broker", st.received),
            ("acked", "Messages acknowledged after their commit", st.acked),
            ("stale_status", "Status messages of an older session, ignored", st.stale_status),
            ("commit_errors", "Commits the store could not take (retried)", st.commit_errors),
            ("pruned", "Expired rows deleted by retention", st.pruned),
            ("quarantined", "Bad messages kept in the quarantine", st.quarantined),
            (
                "quarantine_skipped",
                "Bad messages only counted (over the quarantine's rate limit)",
                st.quarantine_skipped,
            ),
            (
                "split_batches",
                "Batches that failed whole and were written again in parts",
                st.split_batches,
            ),
            (
                "maintenance_errors",
                "Roll-up, retention or staleness rounds that failed (retried)",
                st.maintenance_errors,
            ),
        ):
            yield CounterMetricFamily(f"titik_ingest_{name}", doc, value=value)
        yield SummaryMetricFamily(
            "titik_ingest_commit_seconds",
            "Batch commit latency (one transaction per batch)",
            count_value=st.batches,
            sum_value=st.commit_seconds_total,
        )
        yield GaugeMetricFamily(
            "titik_ingest_commit_max_seconds", "Slowest batch commit", value=st.commit_seconds_max
        )
        yield GaugeMetricFamily(
            "titik_ingest_commit_last_seconds", "Last batch commit", value=st.commit_seconds_last
        )
        cumulative, buckets = 0, []
        for bound, n in zip((*LAG_BUCKETS, float("inf")), st.lag_counts, strict=True):
            cumulative += n
            buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
        yield HistogramMetricFamily(
            "titik_ingest_lag_seconds",
            "Live samples: seconds from the gateway's measurement (ts) to central's commit",
            buckets=buckets,
            sum_value=st.lag_sum,
        )
        yield GaugeMetricFamily(
            "titik_ingest_connected", "1 while connected to the broker", value=int(st.connected)
        )
