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
