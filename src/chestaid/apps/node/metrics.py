"""The node's Prometheus metrics on an opt-in port (`chestaid node … --metrics-port P`, loopback by default):
what operators chart and alert on. Read from the store at each scrape (instances by state, refusals by reason,
conflicts, queue depth, results by outbox state) plus the worker's scoring latency; a registry of its own (no
process-wide default registry is touched). No patient data: states, reasons' first words and counts only."""

from __future__ import annotations

import time
from collections import Counter

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from chestaid.store import Store


ACK_BUCKETS = (60, 300, 600, 900, 1800, 3600, 7200, 14400)  # seconds


class StoreCollector:
    """Gauges computed from the store when Prometheus scrapes."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self):
        rows = self.store.instances()
        states = GaugeMetricFamily("chestaid_instances", "Received instances by state", labels=["state"])
        for state, n in Counter(r["state"] for r in rows).items():
            states.add_metric([state], n)
        states.add_metric(["conflict"], len(self.store.conflicts()))
        yield states
        refusals = GaugeMetricFamily("chestaid_refusals", "Refused instances by reason", labels=["reason"])
        for reason, n in Counter(r["reason"].split(":")[0][:60] for r in rows if r["state"] == "refused").items():
            refusals.add_metric([reason], n)
        yield refusals
        yield GaugeMetricFamily("chestaid_queue_depth", "Instances received and not scored yet",
                                value=sum(r["state"] == "queued" for r in rows))
        outbox = GaugeMetricFamily("chestaid_results", "Result objects by outbox state", labels=["state"])
        for state, n in self.store.outbox_counts().items():
            outbox.add_metric([state], n)
        yield outbox
        oldest = self.store.oldest_pending()
        yield GaugeMetricFamily("chestaid_outbox_oldest_pending_seconds",
                                "Age of the oldest result not yet delivered (0: none pending); alert when it grows",
                                value=max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        yield from self._notifications()
        if self.store.shared:
            nodes = GaugeMetricFamily("chestaid_nodes", "Node processes sharing the store (gone: not seen for 30 s; "
                                      "alert on it)", labels=["state"])
            found = self.store.nodes()
            for state, alive in (("alive", True), ("gone", False)):
                nodes.add_metric([state], sum(n["alive"] is alive for n in found))
            yield nodes
        tier = self.store.tier()
        if tier is not None:
            state = GaugeMetricFamily("chestaid_likely_normal_tier", "The likely-normal tier's state (1: current)",
                                      labels=["state"])
            for name in ("live", "shadow", "off"):
                state.add_metric([name], float(tier["state"] == name))
            yield state

    def _notifications(self):
        """Critical notifications: how many are open, and the time each acknowledged one waited (a histogram)."""
        found = self.store.notifications()
        yield GaugeMetricFamily("chestaid_notifications_open", "Critical notifications not yet acknowledged",
                                value=sum(n["acknowledged_at"] is None for n in found))
        waited = sorted(n["acknowledged_at"] - n["created_at"] for n in found if n["acknowledged_at"] is not None)
        buckets = [(str(b), sum(w <= b for w in waited)) for b in ACK_BUCKETS] + [("+Inf", len(waited))]
        yield HistogramMetricFamily("chestaid_notification_ack_seconds", "Seconds from a critical notification to "
                                    "its acknowledgement", buckets=buckets, sum_value=sum(waited))


class Metrics:
    """The registry, the scoring-latency histogram the worker feeds, and the HTTP endpoint."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StoreCollector(store))
        self.scoring = Histogram("chestaid_scoring_seconds", "Seconds to score one instance (decode, network, "
                                 "results)", registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.server = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        self.server, _ = start_http_server(port, addr=host, registry=self.registry)
        return self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
