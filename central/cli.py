"""titik-central: run the consumer and the HTTP API, check a config, manage API tokens,
verify the audit log, add maintenance windows, receive test webhooks (docs/alerts.md).

``run`` ingests in the main thread (the writer) and serves the HTTP API (``central/api/app.py``)
with uvicorn in a second thread on ``http.host:http.port``. SIGTERM or SIGINT: the writer
commits and acks what it has, the HTTP server stops, the consumer disconnects, exit 0; every
step of it bounded (:class:`Stopping`). SIGUSR1: every thread's stack to stderr.
``build(config)`` gives the store and the consumer without starting anything.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import getpass
import io
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import uvicorn

from agent.protocol.settings import ConfigError
from central.actions.core import Publisher
from central.actions.publish import MqttPublisher
from central.alerting import receiver, windows
from central.alerting.engine import AlertEngine
from central.alerting.webhook import WebhookNotifier
from central.api.app import create_app
from central.api.routes.actions import console_router
from central.api.routes.alerting import WebhookCollector, alerting_router
from central.api.routes.releases import releases_router
from central.api.routes.rollouts import rollouts_router
from central.config import CentralConfig, load_config
from central.ingest.audit import BrokerAudit
from central.ingest.consumer import Consumer
from central.rollout.runner import RolloutRunner
from central.store.alerting import AlertingStore
from central.store.audit import AuditLog
from central.store.base import StoreUnavailable
from central.store.pg import PgStore
from central.store.pg.leader import Leadership
from central.store.pg.schema import SchemaTooNew
from central.store.pg.store import describe
from central.store.pg.tables import PgAlertingStore, PgAuditLog, PgRolloutStore, PgTokenStore
from central.store.rollouts import RolloutStore
from central.store.sqlite import SqliteStore
from central.store.tokens import ROLES, Token, TokenError, TokenStore

EXIT_CONFIG = 2
EXIT_HTTP = 1
EXIT_FAILED = 1
DEFAULT_CONFIG = Path("/etc/titik/central.toml")
HTTP_START_S = 15.0
#: On PostgreSQL, the leader takes in the other instances' device rows this often.
RECONCILE_S = 5.0
#: After SIGTERM the writer's last commit may take this long (it waits on what it writes:
#: a row another instance has locked, a database that does not answer); then it is
#: interrupted, psycopg cancels its query, and what it held goes unacked: the broker sends
#: it again.
STOP_WRITER_S = 5.0
#: Then the HTTP server's and the broker audit's threads, together, at most this long.
STOP_THREADS_S = 6.0
#: A stop still not over this long after the signal: every thread's stack to stderr, exit 1
#: (faulthandler's watchdog). Nothing unacked is lost that way either.
STOP_LIMIT_S = 30.0

log = logging.getLogger("titik.central")


CentralStore = SqliteStore | PgStore


def open_store(config: CentralConfig) -> CentralStore:
    """PostgreSQL when ``[store] url`` is set, else SQLite at ``[store] path``.

    :class:`StoreUnavailable` when PostgreSQL cannot be reached; :class:`SchemaTooNew` when
    its schema is newer than this central."""
    if config.store.url:
        return PgStore(
            config.store.url,
            raw_days=config.store.raw_days,
            rollup_days=config.store.rollup_days,
            quarantine_rows=config.ingest.quarantine_rows,
            pool_size=config.store.pool_size,
        )
    return SqliteStore(
        config.store.path,
        raw_days=config.store.raw_days,
        rollup_days=config.store.rollup_days,
        quarantine_rows=config.ingest.quarantine_rows,
    )


def open_tokens(config: CentralConfig) -> TokenStore:
    """API tokens and sessions: in PostgreSQL with ``[store] url``, else the SQLite file."""
    return PgTokenStore(config.store.url) if config.store.url else TokenStore(config.store.path)


def open_audit(config: CentralConfig) -> AuditLog:
    """The audit log: in PostgreSQL with ``[store] url``, else the SQLite file."""
    return PgAuditLog(config.store.url) if config.store.url else AuditLog(config.store.path)


def open_rollouts(config: CentralConfig) -> RolloutStore:
    """Rollouts: in PostgreSQL with ``[store] url``, else the SQLite file."""
    if config.store.url:
        return PgRolloutStore(config.store.url)
    return RolloutStore(config.store.path)


def open_alerting(config: CentralConfig) -> AlertingStore:
    """The alert lifecycle's tables: in PostgreSQL with ``[store] url``, else the SQLite file."""
    if config.store.url:
        return PgAlertingStore(config.store.url)
    return AlertingStore(config.store.path)


def where(config: CentralConfig) -> str:
    """Where central's data is, for messages: the SQLite path or PostgreSQL's
    user@host:port/db (never a password)."""
    return (
        f"PostgreSQL {describe(config.store.url)}" if config.store.url else str(config.store.path)
    )


def store_name(config: CentralConfig, store: CentralStore) -> str:
    """Where the store is, for logs: the SQLite path or PostgreSQL's user@host:port/db."""
    return f"PostgreSQL {store.where}" if isinstance(store, PgStore) else str(config.store.path)


def build(config: CentralConfig) -> tuple[CentralStore, Consumer]:
    """The store (:func:`open_store`) and the (not yet connected) consumer for ``config``."""
    store = open_store(config)
    consumer = Consumer(config, store)
    # One evaluator per fleet: the instance holding PostgreSQL's advisory lock (always the
    # one on SQLite); the others ingest and serve the API (central/store/pg/leader.py).
    leadership = Leadership(config.store.url or None)
    consumer.leader = leadership.check
    consumer.on_stop.append(leadership.close)
    consumer.stats.leader = leadership.leader
    if isinstance(store, PgStore):
        consumer.reconcile_s = RECONCILE_S
        consumer.instances = leadership.instances
        consumer.stored_news = store.device_news
        consumer.stored_rows = store.devices_named
    runner = RolloutRunner(
        open_rollouts(config),
        prefix=config.mqtt.topic_prefix,
        states=lambda: consumer.fleet.states,
        reports=store.reported_docs,
        # QoS 1, through the consumer's own session (paho queues it while the broker is
        # away); documents retained, an upgrade's commands not; every one of them was signed
        # by the operator who made the plan.
        publish=lambda topic, payload, retain: consumer.client.publish(topic, payload, 1, retain),
        every_s=config.rollout.tick_s,
    )
    consumer.periodic.append(runner.tick)
    # On its own thread and connection: a city going down is 50,000 alerts to take in and
    # group, and ingest must not wait for that (central/alerting/engine.py).
    consumer.aside.append(alert_engine(config).tick)
    # A new leader republishes each active rollout's document first, as after a restart.
    leadership.on_change = lambda leader: runner.restarted() if leader else None
    return store, consumer


def alert_engine(config: CentralConfig) -> AlertEngine:
    """The alert lifecycle (central/alerting/): history, windows, incidents, the webhook
    (its thread starts with the first notification)."""
    a = config.alerts
    alerting = open_alerting(config)
    notifier = WEBHOOKS.setdefault(webhook_key(config), WebhookNotifier(a.webhook, alerting))
    return AlertEngine(alerting, a.incidents, notifier.submit, console_url=a.console_url)


#: The webhook notifier of each store (one per process): the engine submits, the API shows
#: its counters and submits operators' transitions.
WEBHOOKS: dict[Path | str, WebhookNotifier] = {}


def webhook_key(config: CentralConfig) -> Path | str:
    """The store's key in :data:`WEBHOOKS`: its PostgreSQL url, else its SQLite path."""
    return config.store.url or config.store.path


def warn_without_tokens(config: CentralConfig) -> None:
    tokens = open_tokens(config)
    try:
        if not tokens.tokens():
            log.warning(
                "no API token yet: create one with "
                "`titik-central token create --name NAME --role admin`"
            )
    finally:
        tokens.close()


def cmd_run(config: CentralConfig) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
        level=config.log.level.upper(),
    )
    try:
        store, consumer = build(config)
    except (StoreUnavailable, SchemaTooNew) as exc:
        log.error("[store] url: %s", exc)
        return EXIT_FAILED
    if isinstance(store, PgStore):
        log.info("store: PostgreSQL %s (schema version %d -> %d)", store.where, *store.migrated)
    stop = threading.Event()
    stopping = Stopping(stop)
    signal.signal(signal.SIGTERM, stopping.on_signal)
    signal.signal(signal.SIGINT, stopping.on_signal)
    dump_stacks_on(signal.SIGUSR1)
    audit_log = open_audit(config)
    broker_audit = BrokerAudit(config, audit_log, rollouts=open_rollouts(config))
    publisher = MqttPublisher(config.mqtt)
    server = http_server(config, store, consumer, audit_log, publisher)
    # Not the main thread, so uvicorn installs no signal handlers: ours stop everything.
    http = threading.Thread(target=server.run, name="http", daemon=True)
    http.start()
    if not wait_started(server, http, stop):
        log.error("HTTP API did not start on %s:%d", config.http.host, config.http.port)
        store.close()
        stopping.done()
        return 0 if stop.is_set() else EXIT_HTTP
    scheme = "https" if config.http.tls.cert else "http"
    log.info(
        "dashboard: %s://%s:%d/  (API docs: /docs)", scheme, config.http.host, config.http.port
    )
    warn_without_tokens(config)
    consumer.start()
    publisher.start()
    if not config.console.signing_keys:
        log.info("no [console] signing_keys: web actions can be prepared but not published")
    broker_audit.start()
    auditing = threading.Thread(target=broker_audit.run, args=(stop,), name="audit", daemon=True)
    auditing.start()
    log.info(
        "ingesting from %s:%d into %s",
        config.mqtt.host, config.mqtt.port, store_name(config, store),
    )  # fmt: skip
    try:
        stopping.write(consumer)
    finally:
        server.should_exit = True
        deadline = time.monotonic() + STOP_THREADS_S
        for thread in (http, auditing):  # daemons: one still running is left behind
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("stopping: the %s thread did not end; leaving it", thread.name)
        broker_audit.stop()
        publisher.stop()
        consumer.stop()
        store.close()
        audit_log.close()
        stopping.done()
    return 0


class StopOverdue(KeyboardInterrupt):
    """Raised in the writer (the main thread) when its last commit is overdue. A
    KeyboardInterrupt, so psycopg cancels the query it waits on in the server and its
    transaction rolls back (psycopg's ``Connection.wait``), as on Ctrl-C."""


class Stopping:
    """SIGTERM and SIGINT for ``titik-central run``, every wait of the stop bounded.

    The first signal sets ``stop``: the writer commits and acks what it holds, then returns.
    If it is still writing :data:`STOP_WRITER_S` later (its last commit waits on a row lock
    another instance holds: one killed mid-transaction on another host keeps its locks until
    PostgreSQL notices the dead connection; or on a database that does not answer), or at a
    second signal, :class:`StopOverdue` interrupts it: nothing of that commit is acked, so
    the broker sends it again when this instance's session is back. Whatever still hangs
    after :data:`STOP_LIMIT_S` gets every thread's stack on stderr and exit 1.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.writing = False
        self._timer: threading.Timer | None = None

    def write(self, consumer: Consumer) -> None:
        """``consumer.run(stop)`` in this (the main) thread, cut short when overdue."""
        self.writing = True
        try:
            try:
                consumer.run(self.stop)
            finally:
                self.writing = False
                if self._timer is not None:
                    self._timer.cancel()
        except StopOverdue:
            log.warning(
                "stopping without the writer's last commit (still writing %g s after the "
                "signal, or a second signal): its messages are not acked, the broker sends "
                "them again",
                STOP_WRITER_S,
            )

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop.is_set():
            log.info("signal %d: committing, acking and disconnecting", signum)
            self.stop.set()
            with contextlib.suppress(ValueError, io.UnsupportedOperation):
                faulthandler.dump_traceback_later(STOP_LIMIT_S, exit=True)
            self._timer = threading.Timer(STOP_WRITER_S, self._overdue)
            self._timer.daemon = True
            self._timer.start()
        elif self.writing:
            self.writing = False  # once: the stop's own steps are never interrupted
            raise StopOverdue

    def _overdue(self) -> None:
        # A real signal to the main thread, so a wait there returns (EINTR) to run on_signal.
        if self.writing:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    def done(self) -> None:
        """The stop is over: no watchdog left to fire (``run`` called in-process)."""
        if self._timer is not None:
            self._timer.cancel()
        faulthandler.cancel_dump_traceback_later()


def dump_stacks_on(signum: int) -> None:
    """``kill -USR1 <pid>``: every thread's stack to stderr (faulthandler), the process goes
    on: where a stop or the writer hangs. Not when stderr is no file (an in-process test)."""
    with contextlib.suppress(ValueError, io.UnsupportedOperation, AttributeError):
        faulthandler.register(signum, file=sys.stderr, all_threads=True)


def http_server(
    config: CentralConfig,
    store: CentralStore,
    consumer: Consumer,
    audit_log: AuditLog | None = None,
    publisher: Publisher | None = None,
) -> uvicorn.Server:
    """``publisher``: the console's broker connection (central.actions.publish); without one,
    web actions are prepared but refused at submit (503)."""
    notifier = WEBHOOKS.get(webhook_key(config))
    app = create_app(
        store,
        consumer.stats,
        tokens=open_tokens(config),
        audit_log=audit_log or open_audit(config),
        session_s=config.auth.session_hours * 3600,
        metrics_public=config.auth.metrics_public,
        device_series=config.metrics.device_series,
        device_series_max_age_s=config.metrics.device_series_max_age_s,
        routers=[
            console_router(config, store, publisher, notifier.submit if notifier else None),
            alerting_router(config, store, notifier),
            rollouts_router(config, store, open_rollouts(config)),
            *([releases_router(config.http.releases_dir)] if config.http.releases_dir else []),
        ],
        map_config=config.map,
        collectors=[WebhookCollector(notifier)] if notifier else [],
        service_score_below=config.alerts.service_score_below,
    )
    tls = config.http.tls
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.http.host,
            port=config.http.port,
            log_config=None,  # keep our logging setup
            access_log=config.log.level == "debug",
            timeout_graceful_shutdown=5,
            # Behind a reverse proxy: believe its X-Forwarded-Proto (https makes the session
            # cookie Secure) and X-Forwarded-For (the address failures are logged with).
            proxy_headers=True,
            forwarded_allow_ips=config.http.trusted_proxies,
            ssl_certfile=str(tls.cert) if tls.cert else None,
            ssl_keyfile=str(tls.key) if tls.key else None,
        )
    )


def wait_started(server: uvicorn.Server, thread: threading.Thread, stop: threading.Event) -> bool:
    """True once uvicorn listens; False if it failed (port taken) or we were stopped."""
    for _ in range(int(HTTP_START_S / 0.05)):
        if server.started:
            return True
        if not thread.is_alive() or stop.wait(0.05):
            break
    return server.started


def _who() -> str:
    """Who runs the CLI, for the audit log: the Unix user and the host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) + "Z"


def _state(t: Token, now: float) -> str:
    if t.revoked is not None:
        return "revoked " + _when(t.revoked)
    if t.expires is not None and t.expires <= now:
        return "expired"
    return "active"


def token_list(tokens: TokenStore, show_all: bool) -> int:
    now = time.time()
    rows = [("ID", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED", "STATE")]
    rows += [
        (t.id, t.name, t.role, _when(t.created), _when(t.expires), _when(t.last_used),
         _state(t, now))
        for t in tokens.tokens()
        if show_all or t.active(now)
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def token_create(tokens: TokenStore, audit_log: AuditLog, args: argparse.Namespace) -> int:
    days = args.expires_days
    token, secret = tokens.create(
        args.name, args.role, expires_in_s=None if days is None else days * 86400
    )
    audit_log.append(
        _who(), "token.create", f"token/{token.id}", key_id=None, result="created",
        detail={"name": token.name, "role": token.role, "expires": token.expires}, via="cli",
    )  # fmt: skip
    print(secret)
    print(
        f"token {token.id} for {token.name!r} ({token.role}) created. It is shown only this "
        "once: store it now (a password manager, Prometheus' credentials file).",
        file=sys.stderr,
    )
    return 0


def token_revoke(tokens: TokenStore, audit_log: AuditLog, which: str) -> int:
    token = tokens.revoke(which)
    audit_log.append(
        _who(), "token.revoke", f"token/{token.id}", key_id=None, result="revoked",
        detail={"name": token.name, "role": token.role}, via="cli",
    )  # fmt: skip
    print(f"token {token.id} ({token.name}, {token.role}) revoked; its sessions have ended")
    return 0


def cmd_token(config: CentralConfig, args: argparse.Namespace) -> int:
    tokens = open_tokens(config)
    audit_log = open_audit(config)
    try:
        if args.action == "list":
            return token_list(tokens, args.all)
        if args.action == "create":
            return token_create(tokens, audit_log, args)
        return token_revoke(tokens, audit_log, args.which)
    except TokenError as exc:
        print(f"titik-central token {args.action}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        tokens.close()
        audit_log.close()


def cmd_audit_verify(config: CentralConfig) -> int:
    audit_log = open_audit(config)
    try:
        problems = audit_log.verify()
        head = audit_log.head()
    finally:
        audit_log.close()
    if problems:
        for p in problems:
            print(f"BROKEN: {p}")
        print(f"{where(config)}: the audit log is not whole (first break above)", file=sys.stderr)
        return EXIT_FAILED
    if head is None:
        print("the audit log is empty")
    else:
        print(f"the audit log is whole: {head.seq} entries, head #{head.seq} hash {head.hash}")
    return 0


def cmd_maintenance(config: CentralConfig, args: argparse.Namespace) -> int:
    try:
        # The fleet's tables (and PostgreSQL's migrations), before central's first start.
        open_store(config).close()
    except (StoreUnavailable, SchemaTooNew) as exc:
        print(f"titik-central maintenance: [store] url: {exc}", file=sys.stderr)
        return EXIT_FAILED
    audit_log = open_audit(config)
    alerting = open_alerting(config)
    try:
        return windows.run(
            alerting,
            args,
            _who(),
            lambda *a, **kw: audit_log.append(*a, key_id=None, via="cli", **kw),
        )
    finally:  # windows.run closes the alerting store
        audit_log.close()


TOKENS_DESCRIPTION = """\
API tokens: who may use the HTTP API and the dashboard, with which role.

Roles, each allowed what the ones before it are: viewer (read the fleet, alerts, audit log,
/metrics), operator (also the quarantine and, from the web, config pushes, commands, alert
acknowledgements), admin (also the token list). A token is printed once, when created; only
its SHA-256 is stored. Log in to the dashboard with it, or send it as
"Authorization: Bearer <token>" (scripts, Prometheus). Creating and revoking are written to
the audit log. The commands work while central runs (same database file).

examples:
  titik-central token create --name alice --role operator
  titik-central token create --name prometheus --role viewer --expires-days 365
  titik-central token list --all
  titik-central token revoke alice
"""


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 (one return per command)
    parser = argparse.ArgumentParser(
        prog="titik-central",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    config_help = f"central.toml (default {DEFAULT_CONFIG}); its store.path is the database"
    run = sub.add_parser("run", help="consume telemetry into the store and serve the HTTP API")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", type=Path)

    token = sub.add_parser(
        "token",
        help="create, list or revoke API tokens",
        description=TOKENS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = token.add_subparsers(dest="action", required=True)
    create = tsub.add_parser(
        "create",
        help="create a token and print it once (stdout; the note goes to stderr)",
        description="Create a token and print it on stdout, once: TOKEN=$(titik-central token create ...)",
    )
    create.add_argument(
        "--name",
        required=True,
        help="who holds it (the audit log records this name); unique among active tokens",
    )
    create.add_argument("--role", required=True, choices=ROLES, help="viewer < operator < admin")
    create.add_argument(
        "--expires-days",
        type=float,
        metavar="DAYS",
        help="it stops working after this many days (default: never)",
    )
    listing = tsub.add_parser("list", help="list active tokens (never the secrets)")
    listing.add_argument("--all", action="store_true", help="revoked and expired ones too")
    revoke = tsub.add_parser("revoke", help="revoke a token now; its dashboard sessions end")
    revoke.add_argument(
        "which", metavar="ID_OR_NAME", help="the token's id (token list) or its name"
    )
    for p in (create, listing, revoke):
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)

    audit = sub.add_parser(
        "audit",
        help="check the audit log",
        description='The audit log (docs/security.md, "Audit log"). Browse it with GET /api/audit.',
    )
    asub = audit.add_subparsers(dest="action", required=True)
    verify = asub.add_parser(
        "verify",
        help="check the hash chain; exit 1 naming the first broken entry",
        description="Recompute every entry's hash and its link to the one before. Exit 0 and "
        "print the head hash (keep a copy elsewhere: it also detects a cut tail); exit 1 "
        "naming each changed, inserted or deleted entry, first break first.",
    )
    verify.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)

    windows.add_parser(
        sub,
        lambda p: p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help),
    )
    receiver.add_parser(sub)

    args = parser.parse_args(argv)
    if args.cmd == "webhook-receiver":
        return receiver.main(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.cmd == "check-config":
        print(f"{args.config}: ok")
        return 0
    try:
        if args.cmd == "token":
            return cmd_token(config, args)
        if args.cmd == "audit":
            return cmd_audit_verify(config)
        if args.cmd == "maintenance":
            return cmd_maintenance(config, args)
    except (StoreUnavailable, SchemaTooNew) as exc:
        print(f"titik-central {args.cmd}: [store] url: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return cmd_run(config)


if __name__ == "__main__":
    sys.exit(main())
