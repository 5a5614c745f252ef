"""The seed's network: shapes, parameter count, and what train() and eval() change."""

import pytest
import torch

from helpers.models import LeNet5, SimpleNN, count_parameters, parameter_table


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SimpleNN()


def test_logits_for_every_image_of_a_batch(model):
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert model(torch.randn(5, 784)).shape == (5, 10)


def test_unbatched_image_is_an_error_not_a_batch_of_one(model):
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model.eval()(torch.randn(28, 28))


def test_parameter_count_layer_by_layer(model):
    assert count_parameters(model) == model.get_num_parameters() == (109_770, 109_770)
    counts = {name: n for name, _, n in parameter_table(model)}
    assert counts["fc1.weight"] == 784 * 128 and counts["fc1.bias"] == 128
    assert counts["fc2.weight"] == 128 * 64 and counts["fc3.weight"] == 64 * 10
    assert counts["bn1.weight"] == counts["bn1.bias"] == 128
    assert counts["bn2.weight"] == counts["bn2.bias"] == 64
    model.fc1.weight.requires_grad_(False)
    assert count_parameters(model) == (109_770, 109_770 - 784 * 128)


def test_training_mode_is_random_and_eval_mode_is_deterministic(model):
    x = torch.randn(32, 1, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))  # a fresh Dropout mask each call
    model.eval()
    assert torch.equal(model(x), model(x))


def test_eval_output_of_a_sample_does_not_depend_on_its_batch(model):
    x = torch.randn(32, 1, 28, 28)
    model.eval()
    torch.testing.assert_close(model(x)[:1], model(x[:1]))
    model.train()
    model.dropout.p = 0.0  # isolate BatchNorm: in training it normalizes with batch statistics
    assert not torch.allclose(model(x)[:4], model(x[:4]))


def test_batchnorm_refuses_a_single_sample_in_training_mode(model):
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model.train()(torch.randn(1, 1, 28, 28))
    assert model.eval()(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_training_forward_updates_running_statistics_and_eval_does_not(model):
    before = model.bn1.running_mean.clone()
    model.eval()(torch.randn(8, 784))
    assert torch.equal(model.bn1.running_mean, before)
    model.train()(torch.randn(8, 784))
    assert not torch.equal(model.bn1.running_mean, before)
    assert model.bn1.num_batches_tracked.item() == 1


def test_lenet5_has_the_papers_layers_and_sizes():
    lenet = LeNet5()
    x = torch.zeros(2, 1, 28, 28)
    shapes = []
    for layer in lenet.features:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes[2] == (6, 14, 14) and shapes[-1] == (16, 5, 5)  # C1-S2, C3-S4 of the paper
    widths = [m.out_features for m in lenet.classifier if isinstance(m, torch.nn.Linear)]
    assert widths == [120, 84, 10] and lenet(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    counts = {name: n for name, _, n in parameter_table(lenet)}
    assert counts["features.0.weight"] + counts["features.0.bias"] == 156
    assert counts["features.3.weight"] + counts["features.3.bias"] == 2_416  # fully connected C3
    assert count_parameters(lenet)[0] == 61_706
