"""Calibration, temperature scaling and the "not sure" rule (chapter 13)."""

from __future__ import annotations

import pytest
import torch

from helpers import calibration


def sampled(temperature: float, n: int = 20000) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits, and labels drawn from softmax(logits / temperature): calibrated at that T."""
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(n, 10, generator=g)
    labels = torch.multinomial(torch.softmax(logits / temperature, 1), 1, generator=g).flatten()
    return logits, labels


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    logits, labels = sampled(1.0)
    assert calibration.ece(torch.softmax(logits, 1), labels) < 1.5
    logits, labels = sampled(3.0)  # the labels are noisier than the logits say
    assert calibration.ece(torch.softmax(logits, 1), labels) > 10


def test_temperature_scaling_recovers_the_temperature_and_changes_no_answer():
    logits, labels = sampled(2.5)
    t = calibration.fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.05)
    before = calibration.ece(torch.softmax(logits, 1), labels)
    after = calibration.ece(torch.softmax(logits / t, 1), labels)
    assert after < before / 5
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))


def test_reliability_bins_count_every_answer():
    probs = torch.tensor([[0.95, 0.05], [0.55, 0.45], [0.2, 0.8], [0.5, 0.5]])
    table = calibration.reliability(probs, torch.tensor([0, 1, 1, 0]), bins=10)
    assert table["count"].sum() == 4
    assert table["count"][9] == 1 and table["count"][5] == 1 and table["count"][4] == 1
    assert table["accuracy"][5] == 0 and table["accuracy"][9] == 1


def test_the_not_sure_rule_loses_what_it_says_and_accounts_for_every_answer():
    logits, labels = sampled(1.0)
    probs = torch.softmax(logits, 1)
    threshold = calibration.not_sure_threshold(probs, labels, lose=0.05)
    effect = calibration.abstain(probs, labels, threshold)
    assert effect["lost"] == pytest.approx(5.0, abs=0.1)
    assert effect["right"] + effect["wrong"] + effect["not_sure"] == pytest.approx(100.0)
    assert effect["caught"] > effect["lost"], "a wrong answer is less sure than a right one"
    assert calibration.abstain(probs, labels, 0.0)["not_sure"] == 0


def test_page_rule_is_rounded_as_the_page_stores_it():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    images, labels = torch.randn(200, 1, 28, 28), torch.randint(0, 10, (200,))
    rule = calibration.page_rule(model, images, labels)
    assert set(rule) == {"temperature", "not_sure_below", "lose"}
    assert rule["temperature"] == round(rule["temperature"], 4) > 0
    assert 0 <= rule["not_sure_below"] < 1
