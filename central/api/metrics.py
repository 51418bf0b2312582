"""Prometheus metrics, read from the store and the ingest counters at scrape time.

:class:`FleetCollector` is a custom collector: nothing is kept between scrapes, and each app
registers it in its own :class:`prometheus_client.CollectorRegistry` (never the global one).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

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
from central.store.console import DeviceRow, RegionRow
from central.store.service import ServiceStore

log = logging.getLogger("titik.central.metrics")


@runtime_checkable
class MetricsQueries(Protocol):
    """Optional store extras (the SQLite store has them, central/store/console.py)."""

    def region_rows(self) -> list[RegionRow]: ...

    def open_alerts_by_region(self) -> list[tuple[str, str, int]]: ...

    def device_rows(self) -> list[DeviceRow]: ...


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

    def _regions(
        self, rows: list[RegionRow], alerts_open: list[tuple[str, str, int]]
    ) -> Iterator[Metric]:
        """Per-region series (issue 18): what Grafana maps and alerts on per region."""
        devices = GaugeMetricFamily(
            "titik_region_devices", "Gateways by region and status", labels=["region", "status"]
        )
        for r in rows:
            devices.add_metric([r.region, "online"], r.online)
            devices.add_metric([r.region, "offline"], r.offline)
        yield devices
        alerts = GaugeMetricFamily(
            "titik_region_alerts_open", "Open alerts by region and kind", labels=["region", "kind"]
        )
        for region, kind, n in alerts_open:
            alerts.add_metric([region, kind], n)
        yield alerts

    def _fleet(self) -> Iterator[Metric]:
        store = self.store
        if isinstance(store, MetricsQueries):
            # Both grouped queries answer the fleet-wide gauges too: no second pass over
            # the gateways (store.summary) or load of every open alert (store.alerts).
            rows = sorted(store.region_rows())
            alerts_open = store.open_alerts_by_region()
            yield from self._regions(rows, alerts_open)
            online = sum(r.online for r in rows)
            offline = sum(r.offline for r in rows)
            clients_by_region = {r.region: r.clients for r in rows}
            by_kind: dict[str, int] = {}
            for _, kind, n in alerts_open:
                by_kind[kind] = by_kind.get(kind, 0) + n
        else:
            s = store.summary()
            online, offline, clients_by_region = s.online, s.offline, s.clients_by_region
            by_kind = {}
            for a in store.alerts(open_only=True):
                by_kind[a.kind] = by_kind.get(a.kind, 0) + 1
        devices = GaugeMetricFamily("titik_devices", "Gateways by status", labels=["status"])
        devices.add_metric(["online"], online)
        devices.add_metric(["offline"], offline)
        yield devices
        clients = GaugeMetricFamily(
            "titik_clients", "Wi-Fi clients on online gateways, by region", labels=["region"]
        )
        for region, n in clients_by_region.items():
            clients.add_metric([region], n)
        yield clients
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
        yield GaugeMetricFamily(
            "titik_leader",
            "1 while this instance evaluates alerts, rollouts, staleness, roll-ups and "
            "retention for the fleet (one of several on PostgreSQL holds it; always 1 alone)",
            value=int(st.leader),
        )


class ServiceCollector(Collector):
    """Service health per region (issue 20), from one SQL aggregate over the APs' latest fresh
    reports (central/store/service.py): no per-AP series, so a scrape stays fast at 10,000."""

    def __init__(self, service: ServiceStore, below: int) -> None:
        self.service = service
        self.below = below

    def collect(self) -> Iterator[Metric]:
        rows = self.service.rollups("region", self.below)
        families = {
            "aps": GaugeMetricFamily(
                "titik_region_service_aps",
                "APs with a fresh service report, by region",
                labels=["region"],
            ),
            "mean": GaugeMetricFamily(
                "titik_region_service_score_mean",
                "Mean service-health score (0-100) of the region's APs",
                labels=["region"],
            ),
            "min": GaugeMetricFamily(
                "titik_region_service_score_min",
                "Lowest service-health score in the region",
                labels=["region"],
            ),
            "below": GaugeMetricFamily(
                "titik_region_service_score_below",
                "APs scoring under alerts.service_score_below, by region",
                labels=["region"],
            ),
        }
        failed = GaugeMetricFamily(
            "titik_region_service_probe_failed",
            "APs whose last service probe failed, by region and probe (dns, portal, internet)",
            labels=["region", "probe"],
        )
        for r in rows:
            families["aps"].add_metric([r.region], r.aps)
            families["mean"].add_metric([r.region], r.mean_score)
            families["min"].add_metric([r.region], r.min_score)
            families["below"].add_metric([r.region], r.below)
            failed.add_metric([r.region, "dns"], r.dns_failed)
            failed.add_metric([r.region, "portal"], r.portal_failed)
            failed.add_metric([r.region, "internet"], r.inet_failed)
        yield from families.values()
        yield failed


# --- per-gateway series (``[metrics] device_series``) ---------------------------------------

#: (metric, help, DeviceRow field); one sample per gateway, labelled {device}, none when the
#: gateway never sent the value. Region, site and position are on titik_device_info.
DEVICE_SERIES = (
    ("titik_device_up", "1 while the gateway is online", "online"),
    ("titik_device_clients", "Wi-Fi clients on the gateway", "clients"),
    ("titik_device_cpu_percent", "CPU use, percent", "cpu_pct"),
    ("titik_device_mem_used_percent", "Memory used, percent", "mem_used_pct"),
    ("titik_device_temp_celsius", "Temperature, degrees Celsius", "temp_c"),
    ("titik_device_disk_used_percent", "Flash used, percent", "disk_used_pct"),
    ("titik_device_last_seen_timestamp_seconds", "Central's clock at its last word", "last_seen"),
)


def _label(value: object) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    text = "" if value is None else str(value)
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text


def device_exposition(rows: list[DeviceRow]) -> bytes:
    """The per-gateway families in Prometheus' text format (0.0.4).

    Written here rather than through prometheus_client's collectors: at 10,000 gateways its
    generic writer takes ~500 ms for these 80,000 samples, this about a tenth of that
    (docs/benchmarks.md). Device ids are topic-safe (nothing to escape); every other label
    value goes through :func:`_label`. Values are the store's: ints, or finite floats (the
    wire refuses NaN and infinities), which Python writes as the format wants (``12.5``,
    ``1e-05``). tests/unit/test_console_metrics.py parses the output with prometheus_client's
    own parser.
    """
    out: list[str] = []
    for name, doc, attr in DEVICE_SERIES:
        out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        at = DeviceRow._fields.index(attr)
        out.extend(f'{name}{{device="{r[0]}"}} {v}\n' for r in rows if (v := r[at]) is not None)
    name = "titik_device_info"
    out.append(f"# HELP {name} One per gateway: where it is and what it runs\n")
    out.append(f"# TYPE {name} gauge\n")
    for r in rows:
        out.append(
            f'{name}{{device="{r[0]}",region="{_label(r[1])}",site="{_label(r[2])}",'
            f'lat="{_label(r[3])}",lon="{_label(r[4])}",version="{_label(r[12])}",'
            f'platform="{_label(r[13])}"}} 1\n'
        )
    return "".join(out).encode()


class RefreshedBlock:
    """The per-gateway families, rebuilt by a thread of their own while someone scrapes.

    At 10,000 gateways the block is 80,000 samples and 5 MB: ~60 ms to query and write, which
    a scrape would otherwise pay every time (p95 213 ms, docs/benchmarks.md). Its values are
    the gateways' last samples, which change once a minute, so a block up to ``max_age_s`` old
    says the same; the thread rebuilds it every ``max_age_s`` and stops when nobody has asked
    for ``idle_s`` (no cost for a central nobody scrapes). The first scrape, and the first
    after an idle spell, build it themselves. A build that fails is logged; the last good
    block is served until the next one (at most ``idle_s`` old: after that a scrape builds
    it, and its error reaches the scraper as a 500).
    """

    def __init__(
        self,
        build: Callable[[], bytes],
        *,
        max_age_s: float,
        idle_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._build = build
        self.max_age_s = max_age_s
        self.idle_s = idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._built_at = 0.0
        self._asked_at = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.builds = 0

    def get(self) -> bytes:
        now = self._clock()
        with self._lock:
            self._asked_at = now
            fresh = self._body is not None and now - self._built_at <= self.idle_s
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="titik-metrics-devices", daemon=True
                )
                self._thread.start()
            if fresh:
                assert self._body is not None  # noqa: S101 - fresh says so
                return self._body
        return self._rebuild()

    def close(self) -> None:
        self._stop.set()

    def _rebuild(self) -> bytes:
        started = self._clock()
        body = self._build()
        with self._lock:
            self._body, self._built_at = body, started
            self.builds += 1
        return body

    def _run(self) -> None:
        while not self._stop.wait(self.max_age_s):
            with self._lock:
                if self._clock() - self._asked_at > self.idle_s:
                    self._body = None  # nobody scrapes: do not keep 5 MB for nobody
                    self._thread = None
                    return
            try:
                self._rebuild()
            except Exception:  # a lost round: the next one tries again
                log.exception("per-gateway metrics: rebuilding the block failed")
