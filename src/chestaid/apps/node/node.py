"""The node: a store, a receiver (SCP), a worker (scoring) and a sender (outbox), started and stopped together.

At start the store is recovered (temporary files of a crash removed); what was received but not scored is
still `queued` and the worker scores it, what was made but not sent is still `pending` and the sender sends
it. Nothing in a restart depends on how the previous process ended (kill -9 included).
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from chestaid.apps.node.notices import NoticeSettings
from chestaid.apps.node.receiver import Receiver
from chestaid.apps.node.results import Algorithm
from chestaid.apps.node.outputs import Destination
from chestaid.apps.node.periodic import Periodic
from chestaid.apps.node.sender import Sender
from chestaid.apps.node.tls import TlsSettings, server_context
from chestaid.core.errors import ChestaidError, describe
from chestaid.core.run_paths import RunPaths
from chestaid.store import DATABASE_ERRORS, Store
from chestaid.store.nodes import BEAT
from chestaid.apps.node.worker import Worker

log = logging.getLogger("chestaid.node")


@dataclass
class NodeConfig:
    run: Path
    store: Path
    port: int = 11112
    ae_title: str = "CHESTAID"
    host: str = "0.0.0.0"
    send_to: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    max_associations: int = 16
    idle_timeout: float = 300.0
    request_timeout: float = 30.0  # seconds a connection may take to ask for an association (connections.Watchdog)
    batch_size: int = 16
    heat_maps: bool = True
    send_tries: int = 8
    retry_delay: float = 2.0
    max_retry_delay: float = 300.0
    send_timeout: float = 30.0
    device: str = "cpu"
    tls: TlsSettings = field(default_factory=TlsSettings)  # DICOM over TLS, in (a certificate) and out (+tls)
    dicomweb_port: int | None = None  # STOW-RS in (chestaid.apps.node.dicomweb); None: none
    dicomweb_users: Path | None = None  # the page's users file: bearer tokens for STOW-RS
    fhir_url: list[str] = field(default_factory=list)  # FHIR R4 servers' bases: a report bundle per scored image
    metrics_port: int | None = None  # Prometheus metrics (chestaid.apps.node.metrics); None: none
    metrics_host: str = "127.0.0.1"
    study_quiet_period: float | None = 60.0  # a study is complete this long after its last image; None: no studies
    per_image_results: bool = False  # per-image SRs and FHIR reports sent beside study results (always without them)
    triage_rules: Path | None = None  # the site's triage rules (inference.triage_rules); None: no triage levels
    notify: NoticeSettings = field(default_factory=NoticeSettings)  # critical-finding notifications (apps.node.notices)
    health_port: int | None = None  # /healthz and /readyz (chestaid.apps.node.health); None: none
    health_host: str = "127.0.0.1"
    ready_max_pending_age: float | None = None  # /readyz unready when a result has been pending longer; None: never
    database: str | None = None  # a postgresql:// URL: a store shared by several nodes (chestaid.store.postgres)
    node_name: str | None = None  # this node among those sharing the store; None: AE title @ host : port


def algorithm_of(run: Path, backend: str = "torch") -> Algorithm:
    from chestaid.core.version import __version__
    from chestaid.inference.identity import run_identity

    identity = run_identity(run, backend)
    calibrated = identity["calibration_sha256"] is not None
    return Algorithm(__version__, identity["run"], identity["weights_sha256"], calibrated, identity)


class Heartbeat(Periodic):
    """This node's beat in the store: while it beats, what it claimed stays its own (chestaid.store.nodes)."""

    name = "chestaid-node-heartbeat"

    def __init__(self, store: Store) -> None:
        self.store = store
        super().__init__(BEAT)

    def run_once(self) -> int:
        self.store.beat()
        return 1


class Node:
    """`Node(config).start()` listens and works in background threads; `stop()` ends them."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.destinations = [str(Destination.parse(d)) for d in config.send_to] + [
            str(Destination.parse(f"fhir:{url}")) for url in config.fhir_url]
        self.store = Store(config.store, database=config.database)
        self.receiver = self.worker = self.sender = self.stow = self.metrics = self.health = self.studies = None
        self.escalator = self.heartbeat = None
        self.stopped = threading.Event()

    def start(self) -> "Node":
        from chestaid.inference.predictor import Predictor

        config = self.config
        recovered = self.store.recover()
        log.info("store %s (%s): %s", config.store, self.store.database,
                 ", ".join(f"{k} {v}" for k, v in recovered.items()))

        predictor = Predictor.load(config.run, config.device)
        algorithm = algorithm_of(config.run, predictor.backend)
        rules = self._rules(list(predictor.task.labels), algorithm.identity)  # a mistake stops the start: a line each
        if not RunPaths(config.run).monitor_reference.is_file():
            log.warning("run %s has no monitoring reference (monitor_reference.json, written by `chestaid calibrate`):"
                        " `chestaid monitor` will list what it scores as not monitored", config.run)
        if config.metrics_port is not None:
            from chestaid.apps.node.metrics import Metrics

            self.metrics = Metrics(self.store)
        self.worker = Worker(self.store, predictor, algorithm, self.destinations,
                             config.batch_size, config.heat_maps,
                             self.metrics.scoring if self.metrics is not None else None,
                             per_image=config.per_image_results or config.study_quiet_period is None)
        tls = config.tls.check()
        self.sender = Sender(self.store, config.ae_title, config.send_tries, config.retry_delay,
                             config.max_retry_delay, config.send_timeout, tls)
        self.receiver = Receiver(self.store, config.port, config.ae_title, config.host, config.allow,
                                 config.max_associations, on_stored=self.worker.wake,
                                 idle_timeout=config.idle_timeout, request_timeout=config.request_timeout,
                                 ssl_context=server_context(tls) if tls.serving else None)
        if config.dicomweb_port is not None:
            from chestaid.apps.node.dicomweb import StowServer

            self.stow = self._listen("STOW-RS (--dicomweb-port)", config.host, config.dicomweb_port,
                                     lambda: StowServer(self.store, config.host, config.dicomweb_port, self.worker.wake,
                                                        config.dicomweb_users,
                                                        server_context(tls) if tls.serving else None))
        if config.study_quiet_period is not None:
            from chestaid.apps.node.studies import StudyAssembler

            self.studies = StudyAssembler(self.store, self.worker.algorithm, self.worker.labels,
                                          predictor.thresholds.values, self.destinations, config.study_quiet_period,
                                          rules=rules, notify=self._notices(rules))
        if self.store.shared:  # other nodes may hold claims on this store: beat, so that they know this one lives
            self.store.register(config.node_name or f"{config.ae_title}@{socket.gethostname()}:{config.port}")
            self.heartbeat = Heartbeat(self.store).start()
        self.worker.start()
        self.sender.start()
        if self.studies is not None:
            self.studies.start()
        if self.escalator is not None:
            self.escalator.start()
        try:
            self._listen("DICOM (--port)", config.host, config.port, self.receiver.start)
            if self.stow is not None:
                self.stow.start()
                log.info("STOW-RS on %s:%d/dicom-web/studies", config.host, self.stow.port)
            if self.metrics is not None:
                self.metrics_port = self._listen("metrics (--metrics-port)", config.metrics_host, config.metrics_port,
                                                 lambda: self.metrics.serve(config.metrics_port, config.metrics_host))
                log.info("Prometheus metrics on %s:%d/metrics", config.metrics_host, self.metrics_port)
            if config.health_port is not None:
                from chestaid.apps.node.health import Health

                self.health = Health(self, config.ready_max_pending_age)
                self.health_port = self._listen("health (--health-port)", config.health_host, config.health_port,
                                                lambda: self.health.serve(config.health_port, config.health_host))
                log.info("health on %s:%d/healthz and /readyz", config.health_host, self.health_port)
        except BaseException:
            self.stop()
            raise
        log.info("node %s listening on %s:%d%s (max %d associations, calling AE titles: %s); results to: %s",
                 config.ae_title, config.host, self.receiver.port,
                 "" if not tls.serving else " over TLS" + (", client certificates required"
                                                           if tls.require_client_cert else ""),
                 config.max_associations,
                 ",".join(config.allow) or "any", ",".join(self.destinations) or "nowhere (kept in the store)")
        return self

    def _rules(self, labels: list[str], identity: dict):
        """The site's triage rules, validated, their sensitivity operating points set on the store's verdicts."""
        if self.config.triage_rules is None:
            return None
        from chestaid.inference.triage_rules import load_rules

        if self.config.study_quiet_period is None:
            raise ChestaidError("--triage-rules sets each study's level: it needs study results "
                                "(a --study-quiet-period)")
        rules = load_rules(self.config.triage_rules, labels)
        scores: dict[str, list[tuple[float, bool]]] = {}
        for uid, given in self.store.latest_verdicts().items():
            decided = self.store.decision(uid)
            for finding, verdict in given.items():
                if decided is not None and finding in decided.scores and verdict in ("present", "absent"):
                    scores.setdefault(finding, []).append((decided.scores[finding].risk, verdict == "present"))
        rules = rules.resolved(scores)
        from chestaid.workflows.triage_report import refuse_live_without_evidence

        refuse_live_without_evidence(self.store, rules, identity)  # a live tier needs the site's evidence, this run's
        if rules.likely_normal is not None:
            self.store.set_tier("live" if rules.likely_normal.live else "shadow")
        log.info("triage rules %s: %s", rules.identity, "; ".join(
            f"{r.finding} → {r.level.value} at " + (f"{r.threshold:.4f}" if r.threshold is not None else "the run's "
                                                   "threshold") for r in rules.rules))
        return rules

    def _notices(self, rules) -> NoticeSettings | None:
        """The notification settings checked, their destinations parsed, the escalator made (None: none)."""
        settings = self.config.notify
        if not settings.active:
            return None
        if rules is None:
            raise ChestaidError("notifications are for studies at the critical level: they need --triage-rules")
        from chestaid.apps.node.notices import Escalator
        from chestaid.apps.node.outputs import queue_made

        settings.check()
        if settings.smtp:
            settings.destinations["smtp"] = Destination.parse(f"smtp://{settings.smtp}")
        if settings.webhook:
            settings.destinations["webhook"] = Destination.parse(f"webhook:{settings.webhook}")
        if len(settings.contacts) > 1:
            self.escalator = Escalator(self.store, settings, lambda made: queue_made(
                self.store, made, list(settings.destinations.values())))
        return settings

    @staticmethod
    def _listen(what: str, host: str, port: int | None, start):
        """`start()`, with a busy or forbidden port reported as that listener's own (one line)."""
        try:
            return start()
        except OSError as e:
            raise ChestaidError(f"cannot listen on {host}:{port} for {what}: {e.strerror or e}") from e

    @property
    def port(self) -> int:
        return self.receiver.port

    def stop(self) -> None:
        for server in (self.health, self.receiver, self.stow, self.metrics):
            if server is not None:
                server.stop()
        for part in (self.escalator, self.studies, self.worker, self.sender, self.heartbeat):
            if part is not None:
                part.stop()
        if self.heartbeat is not None and not any(p is not None and p.is_alive() for p in (self.worker, self.sender)):
            try:
                self.store.unregister()  # what it had not finished is the other nodes' at once
            except DATABASE_ERRORS as e:
                log.warning("node %s: not unregistered from the store (%s); the others wait for it to time out",
                            self.config.ae_title, describe(e))
        self.store.close()
        self.stopped.set()
        log.info("node %s stopped", self.config.ae_title)

    def __enter__(self) -> "Node":
        return self if self.receiver is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
