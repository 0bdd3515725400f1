"""Shared by the cohort tests: tiny federations trained per client and as a cohort, compared tensor by tensor.

Tolerance: float32 training where the cohort reassociates sums (batched matmuls and
convolutions, a weighted mean for padded batches) differs from per-client training by a
few ulps per step; after a round of <= 20 small steps that stays below 1e-5 absolute on
weights of order 1 (measured: <= 1e-7 for SGD; Adam divides by sqrt(v) and amplifies
the same ulps, <= 5e-6). ``TOL`` is that bound.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedloom.client.torch_trainer import TorchTrainer
from fedloom.sim.executor import ClientUpdate, SequentialExecutor

TOL = 1e-5


def federation(sizes, shape=(1, 8, 8), classes=3, seed=0):
    """Per-client (x, y) arrays of the given sizes: learnable (labels depend on x), float32."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(int(np.prod(shape)), classes))
    data = []
    for n in sizes:
        x = rng.normal(size=(n, *shape)).astype(np.float32)
        y = (x.reshape(n, -1) @ direction).argmax(axis=1).astype(np.int64)
        data.append((x, y))
    return data


def client_fn_for(model, data, **trainer_kwargs):
    """One shared module (as the built-in tasks share one), a fresh TorchTrainer per call."""
    return lambda i: TorchTrainer(model, *data[i], **trainer_kwargs)


def run_rounds(strategy, client_fn, clients, initial, executor, state_dir=None, rounds=1, seed=0):
    """``rounds`` rounds of ``strategy`` over all ``clients``; the last round's results and the model."""
    weights = strategy.initial_weights(initial)
    ids = [str(i) for i in range(clients)]
    results = []
    for r in range(1, rounds + 1):
        configs = {cid: strategy.client.fit_config(r, cid, seed) for cid in ids}
        results = list(executor.run_round(r, weights, configs, client_fn, state_dir=state_dir))
        accumulator = strategy.start_accumulator(weights, clients)
        for update in results:
            assert isinstance(update, ClientUpdate), update
            accumulator.add(update)
        weights = accumulator.result()
    return results, weights


def max_difference(per_client, cohort):
    """The largest |difference| over every client and tensor (names, order and dtypes must match)."""
    worst = 0.0
    assert [u.client_id for u in per_client] == [u.client_id for u in cohort]
    for a, b in zip(per_client, cohort, strict=True):
        assert list(a.weights) == list(b.weights)
        assert a.num_samples == b.num_samples
        assert a.metrics["local_steps"] == b.metrics["local_steps"]
        for name, want in a.weights.items():
            got = b.weights[name]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            worst = max(worst, float(np.abs(want.astype(np.float64) - got.astype(np.float64)).max(initial=0.0)))
    return worst


def compare(strategy, model, data, state_dirs=(None, None), rounds=1, cohort=4, **trainer_kwargs):
    """(per-client results, cohort results, their max difference) after ``rounds`` rounds."""
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    make = client_fn_for(model, data, **trainer_kwargs)
    runs = []
    for executor, state_dir in zip((SequentialExecutor("off"), SequentialExecutor(cohort)), state_dirs, strict=True):
        torch.manual_seed(0)
        runs.append(run_rounds(strategy, make, len(data), initial, executor, state_dir, rounds)[0])
    return runs[0], runs[1], max_difference(runs[0], runs[1])


def bn_model(classes=3):
    """Conv (no bias, as BatchNorm models are built: BN removes it) + BatchNorm + classifier.

    A bias right before BatchNorm has a gradient that is zero up to rounding; Adam
    normalises that noise into lr-sized steps of random sign in *both* paths, so such a
    parameter cannot be compared (SGD leaves it at ~1e-9 and matches)."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, classes)
    )  # fmt: skip
