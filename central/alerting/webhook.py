"""Webhook notifications: a bounded queue and one sending thread, so ingest never waits.

``submit`` only puts the payload on a bounded queue (``queue_max``); a full queue drops it,
counts it and logs it (at most once a minute). The thread POSTs each payload as JSON and
retries with exponential backoff (tenacity's ``wait_exponential``: ``backoff_s``, doubling, at
most ``backoff_max_s``) up to ``retries`` more times on a connection error, a timeout, a 5xx
or a 429; another 4xx is the receiver refusing this payload and is not retried. Each
delivery and how it ended is a row of ``notifications`` (``GET /api/notifications``) and the
counters are in :class:`WebhookStats`.

With ``secret`` the body is signed: ``X-Titik-Signature: sha256=<hex HMAC-SHA256 of
"<X-Titik-Timestamp>.<body>">``, so a receiver can check the sender and refuse replays. The
secret, the extra header and the URL's path and query are never logged (only scheme, host
and port).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from central.config import WebhookConfig
from central.store.alerting import AlertingStore

log = logging.getLogger("titik.central.webhook")
LOG_EVERY_S = 60.0


class Retryable(Exception):
    """A failure worth another attempt (network, timeout, 5xx, 429)."""


class Refused(Exception):
    """The receiver refused this payload (4xx other than 429): not retried."""


@dataclass
class WebhookStats:
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    last_error: str | None = None
    last_delivered_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sign(secret: str, ts: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def where(url: str) -> str:
    """What may be logged of a URL: scheme, host and port (a path or query may hold a token)."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}"


class WebhookNotifier:
    def __init__(
        self,
        config: WebhookConfig,
        store: AlertingStore | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.store = store
        self.stats = WebhookStats()
        self._sleep = sleep
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(config.queue_max)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._last_drop_log = -LOG_EVERY_S
        self._pending = 0
        self.idle = threading.Event()
        self.idle.set()

    @property
    def enabled(self) -> bool:
        return bool(self.config.url)

    def submit(self, payload: dict[str, Any]) -> bool:
        """Queue a notification; never blocks. False (counted, logged) when the queue is full."""
        if not self.enabled:
            return False
        self._ensure_thread()
        try:
            with self._lock:
                self._queue.put_nowait(payload)
                self._pending += 1
                self.idle.clear()
        except queue.Full:
            self.stats.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= LOG_EVERY_S:
                self._last_drop_log = now
                log.warning(
                    "webhook queue full (%d waiting): notification dropped (%d dropped in all); "
                    "is %s down?",
                    self.config.queue_max,
                    self.stats.dropped,
                    where(self.config.url),
                )
            return False
        self.stats.queued += 1
        return True

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """For tests and shutdown: True once everything queued was delivered or given up."""
        return self.idle.wait(timeout)

    # --- the sending thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            try:
                self._deliver(payload)
            except Exception:  # a bug here must not end the thread
                log.exception("webhook delivery failed unexpectedly")
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self.idle.set()

    def _deliver(self, payload: dict[str, Any]) -> None:
        c = self.config
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        subject = str(payload.get("subject", ""))
        nid = self.store.delivery_started(subject, str(payload.get("event"))) if self.store else 0
        attempts = 0

        def count(state: RetryCallState) -> None:
            self.stats.retries += 1

        retrying = Retrying(
            stop=stop_after_attempt(c.retries + 1),
            wait=wait_exponential(multiplier=c.backoff_s, max=c.backoff_max_s),
            retry=retry_if_exception_type(Retryable),
            before_sleep=count,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    self._post(body)
        except (Retryable, Refused) as exc:
            self.stats.failed += 1
            self.stats.last_error = str(exc)
            log.warning(
                "webhook %s: gave up on %s after %d attempt(s): %s",
                where(c.url), subject, attempts, exc,
            )  # fmt: skip
            if self.store:
                self.store.delivery_done(nid, "failed", attempts, str(exc))
            return
        self.stats.delivered += 1
        self.stats.last_delivered_at = time.time()
        if self.store:
            self.store.delivery_done(nid, "delivered", attempts, None)

    def _post(self, body: bytes) -> None:
        c = self.config
        ts = f"{time.time():.0f}"
        headers = {"Content-Type": "application/json", "User-Agent": "titik-central",
                   "X-Titik-Timestamp": ts}  # fmt: skip
        if c.secret:
            headers["X-Titik-Signature"] = sign(c.secret, ts, body)
        if c.header:
            name, _, value = c.header.partition(": ")
            headers[name] = value
        req = urllib.request.Request(c.url, data=body, headers=headers, method="POST")  # noqa: S310 (http(s) only, checked by the config)
        try:
            with urllib.request.urlopen(req, timeout=c.timeout_s) as resp:  # noqa: S310
                resp.read(65536)
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                raise Retryable(f"HTTP {exc.code}") from None
            raise Refused(f"HTTP {exc.code} (not retried)") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Retryable(f"{type(reason).__name__}: {reason}") from None
