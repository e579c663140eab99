import json

import pytest
import torch

from reglab.cli import main
from reglab.config import resolve
from reglab.models import build_model, count_params, layer_table, mermaid


def model(name, **kw):
    return build_model(resolve(flag_values={"model": name, **kw}))


def test_regularized_matches_the_notebook_exactly():
    assert count_params(model("regularized")) == (13_398_442, 1_408)


def test_basic_matches_the_reconstructed_baseline():
    assert count_params(model("basic")) == (13_203_274, 0)


def test_layer_order_is_conv_relu_then_batchnorm_as_in_keras():
    names = [r["type"] for r in layer_table(model("regularized"), 160)][:6]
    assert names == ["Conv2D", "BatchNormalization", "Conv2D", "BatchNormalization", "MaxPooling2D", "Dropout"]
    shapes = [r["output_shape"] for r in layer_table(model("regularized"), 160)]
    assert shapes[0] == (None, 160, 160, 32) and (None, 20, 20, 128) in shapes and shapes[-1] == (None, 10)


def test_keras_parity_init_and_batchnorm():
    net = model("regularized")
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3) for bn in bns)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(float(c.bias.detach().abs().sum()) == 0.0 for c in convs)
    w = convs[1].weight.detach()  # Glorot uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
    a = (6 / (9 * 32 + 9 * 32)) ** 0.5
    assert float(w.abs().max()) <= a and float(w.abs().max()) > 0.9 * a
    plain = build_model(resolve({"keras_init": False, "bn_momentum": 0.1}, {"model": "regularized"}))
    assert all(m.momentum == 0.1 and m.eps == 1e-5 for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_single_regularizers_switch_without_new_model_code():
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model("regularized", batchnorm=False).modules())
    undropped = model("regularized", dropout=0.0, dense_dropout=0.0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in undropped.modules())
    assert any(isinstance(m, torch.nn.Dropout2d) for m in model("regularized", spatial_dropout=True).modules())
    # `none` keeps the 6-conv depth of regularized with no regularizer
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model("none").modules()) == 6


def test_drop_path_drops_whole_samples_only_in_training():
    net = model("regularized", drop_path=0.5, image_size=32)
    x = torch.rand(4, 3, 32, 32)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(0)
    assert not torch.allclose(net(x), net(x))


def test_output_shape_any_size():
    net = model("regularized", image_size=64).eval()
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_mermaid_is_generated_from_the_layer_table():
    text = mermaid(layer_table(model("regularized"), 160), 160)
    assert text.startswith("flowchart TD") and text.count("Conv2D 3×3") == 6 and "Dense 10" in text
    assert mermaid(layer_table(model("basic"), 160), 160).count("Conv2D 3×3") == 3


def test_mermaid_draws_the_rows_a_run_recorded_in_summary_json():
    rows = layer_table(model("regularized", image_size=32), 32)
    recorded = json.loads(json.dumps(rows))  # as summary.json holds them: shapes are lists, nothing is rebuilt
    assert mermaid(recorded, 32) == mermaid(rows, 32)
    assert mermaid(recorded[:3], 32).count("-->") == 3  # exactly the rows given: input and three layers


def test_summary_command_prints_keras_like_counts(capsys):
    assert main(["summary", "regularized"]) == 0
    out = capsys.readouterr().out
    assert "Trainable params: 13,398,442" in out and "Non-trainable params: 1,408" in out
    assert main(["summary", "basic"]) == 0
    assert "Trainable params: 13,203,274" in capsys.readouterr().out
