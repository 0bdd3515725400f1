"""PyTorch reference models: logistic regression, an MLP, the FedAvg-paper-style CNN and the CIFAR lab's CNN.

Kept small and fixed so accuracy numbers are comparable across runs and with the
literature. ``torch`` is imported inside each function: building a model is the only
thing here that needs it.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fedloom.core.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

#: names accepted by :func:`build_model` (and by the CLI's ``--model``).
TORCH_MODELS = ("logreg-torch", "mlp", "cnn", "cifar_cnn")
#: the smallest height / width :func:`cifar_cnn` accepts (two unpadded 5x5 convolutions and two pools)
CIFAR_CNN_MIN_SIDE = 16

Shape = Sequence[int]


def logistic_regression(in_shape: Shape = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """Multinomial logistic regression (Flatten + Linear): the convex baseline."""
    _require_torch()
    from torch import nn

    _check_shape(in_shape, num_classes)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), num_classes))


def mlp(
    in_shape: Shape = (1, 28, 28), num_classes: int = 10, hidden: Sequence[int] = (200, 200), dropout: float = 0.0
) -> nn.Module:
    """A ReLU multi-layer perceptron; the default is McMahan et al.'s "2NN" (two layers of 200).

    Images are flattened; a table's rows, ``in_shape = (features,)``, pass as they are.
    ``dropout`` > 0 adds a Dropout after each hidden ReLU, which shifts the layer indices of
    the state_dict (``1, 4, 7`` instead of ``1, 3, 5``) and trains one client at a time
    (a cohort cannot replay per-client dropout masks, fedloom.sim.cohort.probe).
    """
    _require_torch()
    from torch import nn

    _check_shape(in_shape, num_classes)
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ConfigError(f"hidden must be a sequence of positive layer widths, got {tuple(hidden)!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be a probability in [0, 1), got {dropout!r} (0: no dropout)")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(in_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(in_shape: Shape = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """Two 5x5 conv + max-pool blocks (16 and 32 channels), then FC 128 and the classifier.

    Parameters: 215,370 for 1x28x28 inputs and 10 classes. The two 2x2 pools shrink
    height and width to ``H // 4`` and ``W // 4``, so both must be at least 4
    (28x28 Fashion-MNIST gives 32*7*7 = 1568 features, 8x8 digits 32*2*2 = 128).
    """
    _require_torch()
    from torch import nn

    _check_shape(in_shape, num_classes)
    channels, height, width = _image_shape(in_shape)
    return nn.Sequential(
        nn.Conv2d(channels, 16, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (height // 4) * (width // 4), 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def cifar_cnn(in_shape: Shape = (3, 32, 32), num_classes: int = 10) -> nn.Module:
    """The classic small CIFAR CNN: conv 5x5 32 + pool, conv 5x5 64 + pool, FC 512, classifier.

    The convolutions are unpadded, so 32x32 images shrink 32 -> 28 -> 14 -> 10 -> 5 and the
    classifier sees 64*5*5 = 1600 features: 878,538 parameters for 3x32x32 and 10
    classes, 2.5x fewer than with "same" padding (4096 features), which keeps a CPU
    simulation of several clients quick while still learning colour images well past a
    linear model. It has no BatchNorm, as in the FedAvg-era baselines it follows.
    """
    _require_torch()
    from torch import nn

    _check_shape(in_shape, num_classes)
    channels, height, width = _image_shape(in_shape, minimum=CIFAR_CNN_MIN_SIDE, model="cifar_cnn")
    side_h, side_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * side_h * side_w, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


def build_model(
    name: str, in_shape: Shape, num_classes: int, *, hidden: Sequence[int] | None = None, dropout: float = 0.0
) -> nn.Module:
    """Build a reference model by name (one of :data:`TORCH_MODELS`), so configs can choose by string.

    ``hidden`` (layer widths; None: the default) and ``dropout`` shape the ``mlp`` only."""
    if name != "mlp" and (hidden is not None or dropout):
        raise ConfigError(f"hidden and dropout are options of the mlp, not of {name!r}: drop them or use model mlp")
    if name == "logreg-torch":
        return logistic_regression(in_shape, num_classes)
    if name == "mlp":
        return mlp(in_shape, num_classes, (200, 200) if hidden is None else hidden, dropout)
    if name == "cnn":
        return cnn(in_shape, num_classes)
    if name == "cifar_cnn":
        return cifar_cnn(in_shape, num_classes)
    raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(TORCH_MODELS)}")


def _require_torch() -> None:
    """Raise a ConfigError saying how to install torch when it is missing (before ``from torch import nn``)."""
    if importlib.util.find_spec("torch") is None:
        raise ConfigError("the PyTorch models need torch, which is not installed: run `pip install 'fedloom[torch]'`")


def _check_shape(in_shape: Shape, num_classes: int) -> None:
    if not in_shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in in_shape):
        raise ConfigError(f"in_shape must be a non-empty sequence of positive ints, got {tuple(in_shape)!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")


def _image_shape(in_shape: Shape, minimum: int = 4, model: str = "cnn") -> tuple[int, int, int]:
    """``(C, H, W)`` with H and W >= ``minimum``, what the model's convolutions and pools require."""
    if len(in_shape) != 3 or in_shape[1] < minimum or in_shape[2] < minimum:
        raise ConfigError(
            f"{model} needs in_shape (C, H, W) with H and W >= {minimum} (e.g. (1, 28, 28)), got {tuple(in_shape)!r}"
        )
    return int(in_shape[0]), int(in_shape[1]), int(in_shape[2])
