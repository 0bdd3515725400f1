"""Write once, run anywhere: the factory the deployment tests hand to `fedloom agent`
(examples/digits_site.py:make_trainer, loaded by the agent's own loader) runs unchanged
in a simulation and reaches the same accuracy bar."""

from pathlib import Path

import fedloom
from fedloom.client.loading import load_trainer_factory
from fedloom.data import load_digits

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_site.py"


def test_the_deployed_trainer_factory_runs_unchanged_in_simulation():
    sites = 3

    def client_fn(i: int) -> fedloom.Trainer:
        return load_trainer_factory(f"{EXAMPLE}:make_trainer", {"site": str(i), "sites": str(sites)})()

    test = load_digits().test
    evaluator = fedloom.NumpyLogisticTrainer(test.x, test.y, 10)
    result = fedloom.simulate(
        client_fn,
        sites,
        fedloom.fedavg(fraction=1.0, epochs=2, batch_size=16, lr=0.5),
        5,
        evaluation=fedloom.Evaluation(lambda w: evaluator.evaluate(w, fedloom.EvalConfig())),
        recording=fedloom.Recording(store=None),
        observers=[],
    )
    assert result.final_metrics["accuracy"] >= 0.90
    assert isinstance(client_fn(0), fedloom.NumpyLogisticTrainer)
