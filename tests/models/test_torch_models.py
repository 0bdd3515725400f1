import subprocess
import sys

import pytest

from fedloom.core.errors import ConfigError
from fedloom.models import TORCH_MODELS, build_model, cifar_cnn, cnn, logistic_regression, mlp, torch_models

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch


def count(model):
    return sum(p.numel() for p in model.parameters())


#: cifar_cnn's unpadded convolutions need at least 16x16 inputs (tested apart below)
SMALL_INPUT_MODELS = tuple(name for name in TORCH_MODELS if name != "cifar_cnn")


@pytest.mark.parametrize("name", SMALL_INPUT_MODELS)
@pytest.mark.parametrize(("shape", "classes"), [((1, 28, 28), 10), ((1, 8, 8), 10), ((3, 12, 16), 4)])
def test_output_shape(name, shape, classes):
    model = build_model(name, shape, classes)
    out = model(torch.zeros(5, *shape))
    assert out.shape == (5, classes)


def test_cnn_parameter_count_matches_hand_computation():
    conv1 = 16 * 1 * 5 * 5 + 16  # 416
    conv2 = 32 * 16 * 5 * 5 + 32  # 12832
    fc1 = 1568 * 128 + 128  # 200832
    fc2 = 128 * 10 + 10  # 1290
    assert conv1 + conv2 + fc1 + fc2 == 215370
    assert count(cnn()) == 215370
    assert count(cnn((1, 8, 8), 10)) == 416 + 12832 + (32 * 2 * 2 * 128 + 128) + 1290


@pytest.mark.parametrize("name", TORCH_MODELS)
@pytest.mark.parametrize(("shape", "classes"), [((3, 32, 32), 10), ((1, 28, 28), 10), ((3, 16, 20), 4)])
def test_output_shape_on_cifar_sized_inputs(name, shape, classes):
    out = build_model(name, shape, classes)(torch.zeros(5, *shape))
    assert out.shape == (5, classes)


def test_cifar_cnn_layers_and_parameter_count_match_hand_computation():
    conv1 = 32 * 3 * 5 * 5 + 32  # 2432
    conv2 = 64 * 32 * 5 * 5 + 64  # 51264
    fc1 = 64 * 5 * 5 * 512 + 512  # 819712: 32 -> 28 -> 14 -> 10 -> 5
    fc2 = 512 * 10 + 10  # 5130
    assert conv1 + conv2 + fc1 + fc2 == 878538
    assert count(cifar_cnn()) == 878538
    layers = list(build_model("cifar_cnn", (3, 32, 32), 10))
    assert [layers[0].in_channels, layers[0].out_channels, layers[3].out_channels] == [3, 32, 64]
    assert layers[0].kernel_size == (5, 5) and layers[0].padding == (0, 0)
    assert (layers[7].in_features, layers[7].out_features, layers[9].out_features) == (1600, 512, 10)
    assert count(cifar_cnn((1, 28, 28), 10)) == 32 * 25 + 32 + 51264 + (64 * 4 * 4 * 512 + 512) + 5130
    assert list(cifar_cnn().state_dict())[-2:] == ["9.weight", "9.bias"]


def test_logreg_and_mlp_parameter_counts():
    assert count(logistic_regression()) == 784 * 10 + 10
    assert count(mlp()) == (784 * 200 + 200) + (200 * 200 + 200) + (200 * 10 + 10)
    assert count(mlp((1, 8, 8), 10, hidden=(32,))) == (64 * 32 + 32) + (32 * 10 + 10)


def test_state_dict_keys_are_stable():
    assert list(cnn().state_dict()) == [
        "0.weight",
        "0.bias",
        "3.weight",
        "3.bias",
        "7.weight",
        "7.bias",
        "9.weight",
        "9.bias",
    ]
    assert list(logistic_regression().state_dict()) == ["1.weight", "1.bias"]
    assert list(mlp().state_dict()) == ["1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"]


def test_cnn_layer_shapes():
    layers = list(cnn())
    assert isinstance(layers[0], torch.nn.Conv2d)
    assert layers[0].kernel_size == (5, 5)
    assert layers[0].padding == (2, 2)
    assert isinstance(layers[2], torch.nn.MaxPool2d)
    assert layers[7].in_features == 1568
    assert layers[7].out_features == 128


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: build_model("resnet", (1, 28, 28), 10),
            r"unknown model 'resnet'; valid models: logreg-torch, mlp, cnn, cifar_cnn",
        ),
        (lambda: cifar_cnn((3, 15, 32), 10), r"cifar_cnn needs in_shape \(C, H, W\) with H and W >= 16"),
        (lambda: cnn((1, 2, 2), 10), r"H and W >= 4"),
        (lambda: cnn((28, 28), 10), r"\(C, H, W\)"),
        (lambda: logistic_regression((1, 0, 28), 10), r"in_shape"),
        (lambda: mlp((1, 8, 8), 1), r"num_classes"),
        (lambda: mlp((1, 8, 8), 10, hidden=(0,)), r"hidden"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_missing_torch_says_how_to_install(monkeypatch):
    real = torch_models.importlib.util.find_spec
    monkeypatch.setattr(
        torch_models.importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'fedloom\[torch\]'"):
        cnn()


def test_import_without_torch():
    code = "import sys, fedloom.models, fedloom.data, fedloom.sim.partition; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", ["logreg-torch", "mlp"])
@pytest.mark.parametrize("features", [1, 30])
def test_flat_feature_vectors_need_no_image_shape(name, features):
    """A table's rows, in_shape (features,), as fedloom's tabular sites give them."""
    model = build_model(name, (features,), 2)
    out = model(torch.zeros(7, features))
    assert out.shape == (7, 2)
    assert model.state_dict()["1.weight"].shape[1] == features


def test_mlp_hidden_sizes_and_dropout_are_model_options():
    model = build_model("mlp", (12,), 3, hidden=(16, 8, 4))
    assert [tuple(v.shape) for k, v in model.state_dict().items() if k.endswith("weight")] == [
        (16, 12),
        (8, 16),
        (4, 8),
        (3, 4),
    ]
    dropped = build_model("mlp", (12,), 3, hidden=(16,), dropout=0.5)
    assert list(dropped.state_dict()) == ["1.weight", "1.bias", "4.weight", "4.bias"]
    x = torch.ones(64, 12)
    dropped.eval()
    assert torch.equal(dropped(x), dropped(x))  # no dropout at evaluation
    dropped.train()
    torch.manual_seed(0)
    assert not torch.equal(dropped(x), dropped(x))
    assert list(build_model("mlp", (12,), 3, hidden=(16,), dropout=0.0).state_dict())[2] == "3.weight"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build_model("mlp", (4,), 2, dropout=1.0), r"dropout must be a probability in \[0, 1\)"),
        (lambda: build_model("mlp", (4,), 2, dropout=-0.1), r"dropout must be"),
        (lambda: build_model("cnn", (1, 8, 8), 2, hidden=(4,)), r"hidden and dropout are options of the mlp"),
        (lambda: build_model("logreg-torch", (4,), 2, dropout=0.2), r"not of 'logreg-torch'"),
        (lambda: build_model("cnn", (30,), 2), r"cnn needs in_shape \(C, H, W\)"),
    ],
)
def test_bad_tabular_options_are_refused_naming_the_option(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
