"""A hostile aggregator cannot make the agent hold more than its download limit in memory.

The fake servers here stream their bodies chunk by chunk and count what was taken from
them, so the tests see how far the agent read, not just the error it raised.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from fedloom.client.transport import AggregatorClient, RetryPolicy
from fedloom.core import to_bytes
from fedloom.core.errors import PayloadTooLargeError
from fedloom.core.serialization import content_hash

MIB = 1 << 20
CHUNK = 64 * 1024


class EndlessBody(httpx.SyncByteStream):
    """A body of ``total`` bytes made of one reused chunk (nothing big is ever allocated);
    ``sent`` counts the bytes the client pulled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self._chunk = b"\0" * CHUNK

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < self.total:
            self.sent += CHUNK
            yield self._chunk


def client_for(handler: httpx.MockTransport, limit: int) -> AggregatorClient:
    client = AggregatorClient(
        "http://agg.test", transport=handler, retry=RetryPolicy(max_attempts=1), max_download_bytes=limit
    )
    client.authenticate("agent-1", "fla_secret")
    return client


def test_an_oversized_body_without_length_is_cut_off_at_the_limit() -> None:
    body = EndlessBody(total=1536 * MIB)  # 1.5 GiB, never materialised

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    client = client_for(httpx.MockTransport(handler), limit=1 * MIB)
    with pytest.raises(PayloadTooLargeError, match=r"more than 1048576 bytes.*max_download_bytes"):
        client.download_global(3)
    assert body.sent <= 1 * MIB + CHUNK  # read stopped one chunk past the limit at most


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    body = EndlessBody(total=64 * MIB)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body, headers={"Content-Length": str(64 * MIB)})

    client = client_for(httpx.MockTransport(handler), limit=1 * MIB)
    with pytest.raises(PayloadTooLargeError, match="Content-Length"):
        client.download_global("latest")
    assert body.sent == 0


def test_a_model_within_the_limit_still_arrives_whole_and_verified() -> None:
    weights = {
        "conv.weight": np.linspace(-1e30, 1e30, 4096, dtype=np.float64).reshape(64, 64),
        "bn.running_var": np.full(64, 1e-30, dtype=np.float32),
        "bn.num_batches_tracked": np.array(123456789, dtype=np.int64),  # 0-d int64 counter
    }
    payload = to_bytes(weights, round=2)

    def handler(request: httpx.Request) -> httpx.Response:
        chunks = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
        return httpx.Response(200, content=iter(chunks), headers={"X-Fedloom-Sha256": content_hash(weights)})

    client = client_for(httpx.MockTransport(handler), limit=len(payload))  # exactly at the limit is fine
    got, sha = client.download_global(2)
    assert sha == content_hash(weights)
    assert got["bn.num_batches_tracked"].shape == () and int(got["bn.num_batches_tracked"]) == 123456789
    assert np.array_equal(got["conv.weight"], weights["conv.weight"])
