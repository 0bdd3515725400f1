"""Server side of compressed uploads: decoded against the global model, bad ones refused as invalid_payload."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.client.compressed_upload import compressed_upload
from fedloom.core import to_bytes
from fedloom.core.compression import CompressionSpec
from fedloom.server.uploads import UploadRefusedError, decode_compressed, parse_update

START = {"fc.weight": np.zeros((8, 4), dtype=np.float32), "bn.num_batches_tracked": np.array(2, dtype=np.int64)}
LOCAL = {"fc.weight": np.full((8, 4), 0.25, dtype=np.float32), "bn.num_batches_tracked": np.array(7, dtype=np.int64)}


def upload(tmp_path, scheme: str = "int8") -> bytes:
    spec = CompressionSpec(scheme, 0.5)
    return compressed_upload(LOCAL, START, spec, client_id="a", state_dir=tmp_path, round=3, num_samples=4).body


def test_a_compressed_upload_decodes_to_the_local_model(tmp_path):
    body = upload(tmp_path)
    parsed = parse_update(body, 1 << 20)
    got = decode_compressed(parsed, START, CompressionSpec("int8"))
    assert np.allclose(got["fc.weight"], 0.25) and got["fc.weight"].dtype == np.float32
    assert got["bn.num_batches_tracked"].item() == 7


def test_another_scheme_or_a_plain_model_is_refused_as_invalid_payload(tmp_path):
    body = upload(tmp_path, "float16")
    parsed = parse_update(body, 1 << 20)
    with pytest.raises(UploadRefusedError, match="scheme 'float16', but this run uses 'int8'") as info:
        decode_compressed(parsed, START, CompressionSpec("int8"))
    assert info.value.code == "invalid_payload" and info.value.round == 3
    plain = to_bytes(LOCAL, round=3, client_id="a", num_samples=4)
    with pytest.raises(UploadRefusedError, match="no 'compression' header field") as info:
        decode_compressed(parse_update(plain, 1 << 20), START, CompressionSpec("int8"))
    assert info.value.code == "invalid_payload"


def test_a_compressed_upload_that_does_not_fit_the_global_model_is_refused(tmp_path):
    body = upload(tmp_path)
    parsed = parse_update(body, 1 << 20)
    other = {**START, "fc.weight": np.zeros((4, 8), dtype=np.float32)}
    with pytest.raises(UploadRefusedError, match=r"'fc.weight' field 'shape'") as info:
        decode_compressed(parsed, other, CompressionSpec("int8"))
    assert info.value.code == "invalid_payload"
