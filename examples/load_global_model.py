"""Read a run's final global model back from the store and use it outside fedloom.

Every global model a recorded run produces is kept as a plain safetensors file (no
pickle, so loading it cannot run code) whose header also carries the round, the sample
count and a SHA-256 of the tensors. This example:

1. opens the store in ``--home DIR`` (default: ``$FEDLOOM_HOME`` or ``./fedloom-runs``);
2. picks the latest run of ``examples/quickstart_numpy.py`` (or ``--run-id``), and if the
   store holds none, records a short one first so the script always works;
3. loads the last round's weights with ``SqlStore.load_global_model(run_id, round)``
   (verified against the stored hash) and evaluates them on the digits test set with
   :class:`fedloom.NumpyLogisticTrainer`;
4. opens the very same blob with the ``safetensors`` library alone, and, when PyTorch is
   installed, loads the tensors into a fresh ``torch.nn.Linear`` and evaluates it too.

Run it::

    python examples/quickstart_numpy.py --home runs     # record a run (optional)
    python examples/load_global_model.py --home runs
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
from safetensors import safe_open

import fedloom
from fedloom.data import DatasetSplits, load_digits
from fedloom.sim import partition
from fedloom.store import BLOBS_DIRNAME, FileBlobStore, ModelRecord, SqlStore, resolve_home

RUN_NAME = "quickstart-numpy"  # the run name examples/quickstart_numpy.py records under


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", metavar="DIR", help="store directory (default: $FEDLOOM_HOME or ./fedloom-runs)")
    parser.add_argument("--run-id", help=f"run id or unique prefix (default: the latest {RUN_NAME!r} run)")
    return parser.parse_args()


def record_quick_run(store: SqlStore, data: DatasetSplits) -> str:
    """No suitable run yet: record a short quickstart-style FedAvg run and return its id."""
    parts = partition("dirichlet", data.train.y, 20, seed=0, alpha=0.5)

    def client_fn(i: int) -> fedloom.Trainer:
        shard = data.train.subset(parts[i])
        return fedloom.NumpyLogisticTrainer(shard.x, shard.y, data.num_classes)

    strategy = fedloom.fedavg(fraction=0.5, lr=0.5, batch_size=16)
    keep = fedloom.Recording(store=store, run_name=RUN_NAME)
    result = fedloom.simulate(client_fn, 20, strategy, rounds=20, recording=keep, observers=[])
    assert result.run_id is not None
    return result.run_id


def find_run(store: SqlStore, run_id: str | None, data: DatasetSplits) -> str:
    if run_id:
        return store.get_run(run_id).id
    runs = [r for r in store.list_runs() if r.name == RUN_NAME and r.status == "finished"]
    if runs:
        return runs[0].id
    print(f"no {RUN_NAME!r} run in the store yet; recording one (20 rounds)...")
    return record_quick_run(store, data)


def show_safetensors_file(path: Path) -> None:
    """The blob is an ordinary safetensors file: any safetensors reader opens it."""
    with safe_open(str(path), framework="numpy") as f:
        print(f"safetensors file {path}")
        print(f"  header metadata: {f.metadata()}")
        for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            print(f"  tensor {name!r}: shape {f.get_slice(name).get_shape()}")


def torch_accuracy(weights: fedloom.Weights, data: DatasetSplits) -> float:
    """Load the weights into a fresh ``nn.Linear`` (same names and shapes) and score the test set."""
    import torch

    features = int(np.prod(data.input_shape))
    model = torch.nn.Linear(features, data.num_classes)
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()})
    with torch.no_grad():
        logits = model(torch.from_numpy(data.test.x.reshape(len(data.test), features)))
    return float((logits.argmax(dim=1).numpy() == data.test.y).mean())


def main() -> None:
    args = parse_args()
    data = load_digits()
    home = resolve_home(args.home)
    with SqlStore.open_default(home) as store:
        run_id = find_run(store, args.run_id, data)
        record: ModelRecord | None = store.latest_global_model(run_id)
        if record is None or record.blob_key is None:
            raise SystemExit(f"run {run_id} has no stored global model")
        weights = store.load_global_model(run_id, record.round)
    print(f"run {run_id}: global model of round {record.round} ({record.num_samples} samples, sha256 {record.sha256})")
    show_safetensors_file(FileBlobStore(home / BLOBS_DIRNAME).path_for(record.blob_key))

    evaluator = fedloom.NumpyLogisticTrainer(data.test.x, data.test.y, data.num_classes)
    metrics = evaluator.evaluate(weights, fedloom.EvalConfig())
    if importlib.util.find_spec("torch") is not None:
        print(f"accuracy in a fresh torch.nn.Linear: {torch_accuracy(weights, data):.4f}")
    print(f"final accuracy: {metrics['accuracy']:.4f}")


if __name__ == "__main__":
    main()
