"""Predictions, the confusion matrix, per-class metrics and the mistakes, on known answers."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers import evaluation
from helpers.evaluation import Predictions


def known() -> Predictions:
    # 6 samples: true 0,0,1,1,2,2; predicted 0,1,1,1,2,0 with the given confidences
    probs = torch.full((6, 10), 0.0)
    for row, (pred, conf) in enumerate(
        [(0, 0.9), (1, 0.8), (1, 0.7), (1, 0.6), (2, 0.95), (0, 0.55)]
    ):
        probs[row] = (1 - conf) / 9
        probs[row, pred] = conf
    return Predictions(probs, torch.tensor([0, 0, 1, 1, 2, 2]))


def test_accuracy_and_confidence():
    p = known()
    assert p.preds.tolist() == [0, 1, 1, 1, 2, 0]
    assert p.accuracy == pytest.approx(100 * 4 / 6)
    assert p.confidence[1].item() == pytest.approx(0.8)


def test_confusion_matrix_rows_are_true_labels():
    cm = evaluation.confusion(known())
    assert cm.shape == (10, 10) and cm.sum() == 6
    assert cm[0, 1] == 1 and cm[2, 0] == 1 and cm[1, 1] == 2 and cm[0, 0] == 1


def test_per_class_report_accuracy_is_recall_and_precision_differs():
    report = evaluation.per_class_report(known())
    assert report.loc[0, "accuracy"] == 50.0 and report.loc[1, "accuracy"] == 100.0
    assert report.loc[1, "precision"] == pytest.approx(200 / 3)
    assert report.loc[0, "precision"] == 50.0 and report.loc[2, "support"] == 2
    assert report.loc[5, "support"] == 0


def test_mistakes_come_most_confident_first():
    assert evaluation.misclassified(known()).tolist() == [1, 5]


def test_most_confused_pairs_skip_the_diagonal():
    cm = np.zeros((10, 10), dtype=int)
    cm[4, 9], cm[7, 2], cm[3, 3], cm[9, 4] = 5, 3, 100, 5
    assert evaluation.most_confused_pairs(cm, k=3) == [(4, 9, 5), (9, 4, 5), (7, 2, 3)]


def test_predict_matches_the_model_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.Dropout(0.5))
    x, y = torch.randn(20, 4), torch.randint(0, 10, (20,))
    p = evaluation.predict(model, DataLoader(TensorDataset(x, y), batch_size=8))
    assert not model.training
    torch.testing.assert_close(p.probs, model(x).softmax(1))
    assert torch.equal(p.targets, y)
    torch.testing.assert_close(p.probs.sum(1), torch.ones(20))


def test_layer_outputs_are_what_the_layers_compute_and_leave_no_hooks():
    from helpers.models import SimpleNN

    torch.manual_seed(0)
    model = SimpleNN().train()
    x = torch.randn(5, 1, 28, 28)
    out = evaluation.layer_outputs(model, x, ["fc1", "bn2"])
    assert model.training, "the model's mode is restored"
    model.eval()  # what the recorded outputs were computed in
    torch.testing.assert_close(out["fc1"], model.fc1(x.flatten(1)))
    with torch.no_grad():
        h = model.dropout(torch.relu(model.bn1(model.fc1(x.flatten(1)))))
        torch.testing.assert_close(out["bn2"], model.bn2(model.fc2(h)))
    assert all(not m._forward_hooks for m in model.modules()), "hooks removed"
    with pytest.raises(KeyError, match="no submodule named"):
        evaluation.layer_outputs(model, x, ["conv1"])


def test_input_gradient_points_uphill_for_the_loss():
    from helpers.models import SimpleNN

    torch.manual_seed(0)
    model = SimpleNN()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    model.train()
    grad = evaluation.input_gradient(model, x, y)
    assert grad.shape == x.shape and not x.requires_grad and model.training

    def loss(images):
        with torch.no_grad():
            return nn.functional.cross_entropy(model.eval()(images), y, reduction="sum").item()

    assert loss(x + 1e-3 * grad.sign()) > loss(x) > loss(x - 1e-3 * grad.sign())
