"""The agent's side of the wire: one small HTTP client for the aggregator's ``/v1`` API.

Everything docs/protocol.md defines for agents is a method here; the agent runtime
(:mod:`fedloom.client.agent`) never builds a URL or reads a status code itself.

* Network failures (``httpx.TransportError``: refused connection, reset, timeout) and
  5xx answers are retried with exponential backoff and full jitter
  (``uniform(0, min(max_delay, base_delay * 2**attempt))``), up to
  ``RetryPolicy.max_attempts`` or forever. A 4xx answer is never retried: it will not
  change by asking again. Nor is a TLS failure that asking again cannot fix (unknown CA,
  wrong host name, refused client certificate): it raises
  :class:`~fedloom.client.tls.TlsHandshakeError` naming the cause and the fix.
* A refusal becomes an exception carrying the server's ``error`` code and ``detail``:
  :class:`AuthError` (401/403), :class:`NotFoundError` (404),
  :class:`UploadRejectedError` (an upload refused with 400/409/413/422; it is a
  :class:`fedloom.core.RejectedUpdateError`, so ``.code`` is e.g. ``duplicate``), else
  :class:`AggregatorError`. When retries run out: :class:`AggregatorUnavailableError`.
  (They live in :mod:`fedloom.client.answers`; this module re-exports them.)
* Models are checked on the way in: the body is streamed and refused (``PayloadTooLargeError``)
  once it passes ``max_download_bytes``, so memory stays bounded whatever the server sends;
  the payload must parse (verifying its own content hash), which ``X-Fedloom-Sha256`` must equal.
  Lineage entries are parsed as untrusted JSON (:class:`~fedloom.core.lineage.LineageEntry`).

Tests pass ``transport=httpx.MockTransport(handler)``; nothing else needs patching.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fedloom.client.answers import (
    AggregatorError,
    AggregatorUnavailableError,
    AuthError,
    NotFoundError,
    RequestInterruptedError,
    TaskInfo,
    UploadRejectedError,
    fit_config_from,
)
from fedloom.client.tls import TlsHandshakeError, make_ssl_context, tls_problem
from fedloom.core.errors import ConfigError, IntegrityError, PayloadTooLargeError
from fedloom.core.lineage import LineageEntry
from fedloom.core.serialization import DEFAULT_MAX_BYTES, from_bytes, to_bytes
from fedloom.core.weights import Weights

__all__ = [
    "SHA256_HEADER",
    "AggregatorClient",
    "AggregatorError",
    "AggregatorUnavailableError",
    "AuthError",
    "NotFoundError",
    "RequestInterruptedError",
    "RetryPolicy",
    "TaskInfo",
    "TlsHandshakeError",
    "UploadRejectedError",
    "fit_config_from",
    "make_ssl_context",
]

log = logging.getLogger("fedloom.agent")

SHA256_HEADER = "X-Fedloom-Sha256"
#: the longest long-poll the protocol allows
MAX_WAIT_SECONDS = 60
_OCTET = "application/octet-stream"
_UPLOAD_PATHS = ("/v1/updates", "/v1/models/initial")
#: headers that describe the body on the wire, not the decoded bytes a streamed read kept
_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for network errors and 5xx answers.

    ``max_attempts`` counts every try (1 = never retry); ``None`` retries forever, which
    is what an agent on a site wants: it rides out an aggregator restart or a network cut.
    """

    base_delay: float = 1.0
    max_delay: float = 60.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.base_delay <= 0 or self.max_delay < self.base_delay:
            raise ConfigError(
                f"retry delays must satisfy 0 < base_delay <= max_delay, got {self.base_delay} and {self.max_delay}"
            )
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1 (or None for forever), got {self.max_attempts}")

    def cap(self, retry: int) -> float:
        """The upper bound of the delay before retry number ``retry`` (0-based)."""
        return min(self.max_delay, self.base_delay * 2.0 ** min(retry, 64))

    def delay(self, retry: int, rng: random.Random) -> float:
        """A full-jitter delay: uniform in ``[0, cap(retry)]``."""
        return rng.uniform(0.0, self.cap(retry))


# --------------------------------------------------------------------- the client


class AggregatorClient:
    """A synchronous client for one aggregator (``base_url`` like ``https://agg.example.org:8443``).

    ``ca_file`` is the CA that signed the aggregator's certificate (None: the system's);
    ``client_cert`` = (certificate, key) PEM files of this site, for mutual TLS.

    ``register`` (or ``authenticate`` with a stored credential) must come before the other
    calls. ``sleep`` and ``rng`` exist for tests; by default backoff waits can be cut short
    by :meth:`interrupt`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: str | Path | None = None,
        client_cert: tuple[str | Path, str | Path] | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_download_bytes: int = DEFAULT_MAX_BYTES,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"server URL must start with http:// or https://, got {base_url!r}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.max_download_bytes = max_download_bytes
        self.agent_id: str | None = None
        self._credential: str | None = None
        self._interrupted = False
        self._sleep = sleep
        self._rng = rng or random.Random()
        verify = make_ssl_context(ca_file, *(client_cert or (None, None)))
        #: the context to tell TLS misconfiguration from network errors with (real HTTPS only)
        self._tls = verify if self.base_url.startswith("https://") and transport is None else None
        self._has_cert = client_cert is not None
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=verify,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": "fedloom-agent/1"},
        )

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AggregatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def interrupt(self) -> None:
        """Stop retrying: a backoff wait in progress (or the next one) raises :class:`RequestInterruptedError`.

        It only sets a flag, so it is safe to call from another thread or a signal handler.
        """
        self._interrupted = True

    def authenticate(self, agent_id: str, credential: str) -> None:
        """Use a credential obtained earlier (from :meth:`register`, possibly in another process)."""
        self.agent_id = agent_id
        self._credential = credential

    # ---------------------------------------------------------------- endpoints

    def health(self) -> bool:
        """``GET /v1/health``: True when the aggregator answers ``{"ok": true}``."""
        return bool(self.json_call("GET", "/v1/health", auth=False, what="health check").get("ok"))

    def register(self, name: str, join_token: str) -> dict[str, str]:
        """Exchange a join token for a credential; the client then uses it (see :meth:`authenticate`).

        Returns ``{"agent_id", "credential", "role", "run_id"}``.
        """
        answer = self.json_call(
            "POST",
            "/v1/agents/register",
            auth=False,
            json={"name": name, "join_token": join_token},
            what="registration",
        )
        missing = [k for k in ("agent_id", "credential") if not isinstance(answer.get(k), str)]
        if missing:
            raise AggregatorError(200, "invalid_answer", f"registration answer lacks {missing}")
        registration: dict[str, str] = {
            k: str(answer[k]) for k in ("agent_id", "credential", "role", "run_id") if k in answer
        }
        self.authenticate(registration["agent_id"], registration["credential"])
        return registration

    def task(self, wait: float = 0) -> TaskInfo:
        """``GET /v1/task?wait=``: long-polls up to ``wait`` seconds (0-60) for the task to change."""
        wait = max(0.0, min(float(wait), MAX_WAIT_SECONDS))
        timeout = httpx.Timeout(self.timeout, read=self.timeout + wait)
        params = {"wait": f"{wait:g}"}
        return TaskInfo.from_json(self.json_call("GET", "/v1/task", params=params, timeout=timeout, what="task poll"))

    def download_global(self, round: int | str = "latest") -> tuple[Weights, str]:
        """The global model that starts ``round`` (or ``"latest"``) and its content hash, verified."""
        what = f"download of global model {round}"
        response = self._request("GET", f"/v1/models/global/{round}", what=what, max_body=self.max_download_bytes)
        weights, header = from_bytes(response.content, max_bytes=self.max_download_bytes)
        claimed = response.headers.get(SHA256_HEADER)
        if claimed is not None and claimed != header.sha256:
            raise IntegrityError(
                f"global model {round}: {SHA256_HEADER} says {claimed} but the tensors hash to {header.sha256}"
            )
        return weights, header.sha256

    def upload_update(
        self, round: int, weights: Weights, num_samples: int, metrics: Mapping[str, float] | None = None
    ) -> dict[str, Any]:
        """``POST /v1/updates`` with a payload built from ``weights`` (see :meth:`update_payload`)."""
        return self.upload_payload(self.update_payload(round, weights, num_samples, metrics))

    def update_payload(
        self, round: int, weights: Weights, num_samples: int, metrics: Mapping[str, float] | None = None
    ) -> bytes:
        """The exact bytes of an update upload: safetensors with this agent's id, round, count and metrics."""
        if self.agent_id is None:
            raise ConfigError("the client has no agent id: call register() or authenticate() first")
        extra = {"metrics": json.dumps(dict(metrics or {}), allow_nan=False)}
        return to_bytes(weights, round=round, client_id=self.agent_id, num_samples=num_samples, extra=extra)

    def upload_payload(self, payload: bytes) -> dict[str, Any]:
        """``POST /v1/updates`` with ready-made bytes (e.g. re-sending a saved update after a restart)."""
        return self.json_call("POST", "/v1/updates", content=payload, headers={"Content-Type": _OCTET}, what="upload")

    def upload_initial(self, weights: Weights) -> dict[str, Any]:
        """``POST /v1/models/initial`` (admin agents only, and only while the run has no global model)."""
        body, headers = to_bytes(weights, client_id=self.agent_id or ""), {"Content-Type": _OCTET}
        return self.json_call("POST", "/v1/models/initial", content=body, headers=headers, what="initial model upload")

    def lineage(self, round: int | str = "latest") -> LineageEntry:
        """``GET /v1/lineage/{round}``: the lineage link of the model that starts ``round``, parsed as untrusted."""
        return LineageEntry.from_json(self.json_call("GET", f"/v1/lineage/{round}", what=f"lineage of model {round}"))

    def status(self) -> dict[str, Any]:
        """``GET /v1/status``: the run's round, state, mode and counts."""
        return self.json_call("GET", "/v1/status", what="status")

    # ---------------------------------------------------------------- plumbing

    def json_call(self, method: str, path: str, *, what: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, what=what, **kwargs)
        try:
            data = response.json()
        except ValueError:
            raise AggregatorError(response.status_code, "invalid_answer", f"{what}: answer is not JSON") from None
        if not isinstance(data, dict):
            raise AggregatorError(response.status_code, "invalid_answer", f"{what}: answer is not a JSON object")
        return data

    def _request(
        self, method: str, path: str, *, what: str, auth: bool = True, max_body: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send with retries; return a 2xx response or raise the matching :class:`AggregatorError`.

        With ``max_body`` the answer is streamed and refused as soon as it passes that many bytes.
        """
        headers = dict(kwargs.pop("headers", None) or {})
        if auth:
            if self._credential is None:
                raise ConfigError(f"{what} needs a credential: call register() or authenticate() first")
            headers["Authorization"] = f"Bearer {self._credential}"
        retry = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._send(method, path, headers, max_body, what, kwargs)
            except httpx.TransportError as exc:
                problem = None if self._tls is None else tls_problem(exc, self.base_url, self._tls, self._has_cert)
                if problem is not None:
                    raise TlsHandshakeError(f"{what}: {problem}") from None
                failure = AggregatorUnavailableError(0, type(exc).__name__, str(exc) or repr(exc), what=what)
            else:
                if response.status_code < 400:
                    return response
                error = _error_for(response, what)
                if response.status_code < 500 and response.status_code not in _RETRIED_REFUSALS:
                    raise error
                failure = AggregatorUnavailableError(error.status, error.code, error.detail, what=what)
            retry += 1
            if self.retry.max_attempts is not None and retry >= self.retry.max_attempts:
                raise failure
            delay = max(self.retry.delay(retry - 1, self._rng), _retry_after(failure, response))
            log.warning("%s failed (%s: %s); retry %d in %.1f s", what, failure.code, failure.detail, retry, delay)
            self._wait(delay)

    def _send(
        self, method: str, path: str, headers: dict[str, str], max_body: int | None, what: str, kwargs: dict[str, Any]
    ) -> httpx.Response:
        """One try. With ``max_body`` the body is read chunk by chunk, so a hostile or broken
        aggregator cannot make the agent hold more than the limit (plus one chunk) in memory."""
        if max_body is None:
            return self._http.request(method, path, headers=headers, **kwargs)
        request = self._http.build_request(method, path, headers=headers, **kwargs)
        response = self._http.send(request, stream=True)
        try:
            body = _read_limited(response, max_body, what)
        finally:
            response.close()
        kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
        return httpx.Response(response.status_code, headers=kept, content=body, request=request)

    def _wait(self, delay: float) -> None:
        """Back off for ``delay`` seconds, in short slices so :meth:`interrupt` is noticed quickly."""
        if self._sleep is not None:
            self._sleep(delay)
        else:
            deadline = time.monotonic() + delay
            while not self._interrupted and (left := deadline - time.monotonic()) > 0:
                time.sleep(min(0.1, left))
        if self._interrupted:
            raise RequestInterruptedError("stopping: request not retried")


def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    """The (decoded) body of a streamed ``response``, refused once it is over ``limit`` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"{what}: the aggregator announced {declared} bytes (Content-Length), more than the download limit"
            f" of {limit} bytes (max_download_bytes); not reading it"
        )
    buffer = bytearray()
    for chunk in response.iter_bytes():
        buffer += chunk
        if len(buffer) > limit:
            raise PayloadTooLargeError(
                f"{what}: the aggregator sent more than {limit} bytes, the download limit (max_download_bytes);"
                " stopped reading"
            )
    return bytes(buffer)


def _error_for(response: httpx.Response, what: str) -> AggregatorError:
    """The exception for a 4xx/5xx answer, with the server's ``error`` code and ``detail``."""
    status = response.status_code
    code, detail = f"http_{status}", response.reason_phrase or ""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        detail = text[:300] or detail
    else:
        if isinstance(body, dict):
            code = str(body.get("error") or code)
            raw = body.get("detail", detail)
            detail = raw if isinstance(raw, str) else json.dumps(raw)[:300]
    kind: type[AggregatorError] = AggregatorError
    if status in (401, 403):
        kind = AuthError
    elif status == 404:
        kind = NotFoundError
    elif status in (400, 409, 413, 422) and response.request.url.path.endswith(_UPLOAD_PATHS):
        kind = UploadRejectedError
    return kind(status, code, detail, what=what)


#: refusals that mean "not now", sent again later: the rate limit (429, Retry-After) and a timed-out body (408)
_RETRIED_REFUSALS = frozenset({408, 429})
#: the longest Retry-After honoured (a hostile aggregator must not park an agent for a day)
MAX_RETRY_AFTER_SECONDS = 300.0


def _retry_after(failure: AggregatorError, response: httpx.Response | None) -> float:
    """The wait a 429 answer asks for (its Retry-After seconds, bounded), else 0."""
    if failure.status != 429 or response is None:
        return 0.0
    try:
        asked = float(response.headers.get("Retry-After", "0"))
    except ValueError:
        return 0.0
    return min(max(asked, 0.0), MAX_RETRY_AFTER_SECONDS) if math.isfinite(asked) else 0.0
