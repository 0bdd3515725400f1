"""Shipping the agent's own log records to the aggregator (``POST /v1/logs``), never in the way.

A :class:`LogShipper` is a :mod:`logging` handler on the ``fedloom`` logger: ``emit``
only scrubs the line and puts it in a bounded queue (a full queue drops the record and
counts it: training never waits for logging), and a background thread sends batches
every few seconds and once more at :meth:`stop`. A batch is sent once, never retried:
when the aggregator refuses it or is down, its records are dropped and counted
(:attr:`dropped`), and the agent goes on. Secrets (the agent's credential and join
token, any ``Bearer``/``password=``/URL password) are masked before anything is queued.
"""

from __future__ import annotations

import copy
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fedloom.client.transport import AggregatorClient, RetryPolicy
from fedloom.core.agent_logs import LOG_LEVELS, MAX_LOG_BODY, MAX_LOG_MESSAGE, MAX_LOG_RECORDS, MAX_LOGGER_NAME
from fedloom.core.redaction import redact_secrets

#: records waiting to be sent at most; past it new ones are dropped (and counted)
QUEUE_CAPACITY = 5000
#: seconds between batches
SHIP_INTERVAL = 3.0
#: bytes of JSON a batch is kept under: half the aggregator's MAX_LOG_BODY, so the record that
#: crosses it (2,000 characters, escaped at most 6 bytes each) still fits
_BATCH_BYTES = MAX_LOG_BODY // 2

Record = dict[str, Any]
Sender = Callable[[list[Record]], object]


class LogShipper(logging.Handler):
    """Queue records (``emit``) and ship them from a thread; ``secrets()`` names strings to mask."""

    def __init__(
        self,
        send: Sender,
        secrets: Callable[[], Sequence[str]] = tuple,
        *,
        capacity: int = QUEUE_CAPACITY,
        interval: float = SHIP_INTERVAL,
        level: int = logging.INFO,
    ) -> None:
        super().__init__(level)
        self._send = send
        self._secrets = secrets
        self._queue: queue.Queue[Record] = queue.Queue(capacity)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedloom-log-shipper", daemon=True)
        self.dropped = 0  # records lost: queue full, batch refused, aggregator down
        self.sent = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` scrubbed; records of the shipping thread itself are not shipped (no loops)."""
        if threading.current_thread() is self._thread:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            entry = {
                "created_at": record.created,
                "level": record.levelname if record.levelname in LOG_LEVELS else "INFO",
                "logger": record.name[:MAX_LOGGER_NAME] or "root",
                "message": redact_secrets(message, tuple(self._secrets()))[:MAX_LOG_MESSAGE],
            }
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
        except Exception:  # a logging handler must never raise into the code that logged
            self.handleError(record)

    def start(self) -> LogShipper:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ship what is queued (one last time) and stop the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush_batches()
        self.flush_batches()

    def flush_batches(self) -> None:
        """Send everything queued now, in batches within the protocol's limits."""
        while batch := self._next_batch():
            try:
                self._send(batch)
                self.sent += len(batch)
            except Exception:  # refused, unreachable, no credential yet: dropped and counted
                self.dropped += len(batch)

    def _next_batch(self) -> list[Record]:
        batch: list[Record] = []
        size = 0
        while len(batch) < MAX_LOG_RECORDS and size < _BATCH_BYTES:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(entry)
            size += len(json.dumps(entry)) + 2
        return batch


def client_sender(client: AggregatorClient) -> Sender:
    """Send a batch with ``client``'s current credential, one try only (a copy of the client sharing
    its connection pool, so the agent's own requests keep their retry policy)."""

    def send(records: list[Record]) -> object:
        once = copy.copy(client)
        once.retry = RetryPolicy(max_attempts=1)
        return once.json_call("POST", "/v1/logs", json={"records": records}, what="log upload")

    return send


@contextmanager
def shipping_logs(
    client: AggregatorClient, join_token: str | None, enabled: bool = True
) -> Iterator[LogShipper | None]:
    """Ship the ``fedloom`` logger's records to the aggregator for the duration (``fedloom agent``;
    ``--no-ship-logs`` gives ``enabled=False``); the join token and credential are always masked."""
    if not enabled:
        yield None
        return
    shipper = LogShipper(client_sender(client), lambda: (join_token or "", client._credential or "")).start()
    logger = logging.getLogger("fedloom")
    logger.addHandler(shipper)
    try:
        yield shipper
    finally:
        logger.removeHandler(shipper)
        shipper.stop()
        if shipper.dropped:
            logging.getLogger("fedloom.agent").warning("%d log record(s) were not shipped", shipper.dropped)
