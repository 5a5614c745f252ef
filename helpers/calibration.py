"""Does a model know when it does not know? Calibration and a "not sure" rule (chapter 13).

A model is calibrated when, of the answers it gives with confidence p, a fraction p is right.
`reliability` bins the answers by confidence; the expected calibration error (`ece`) is the gap
between confidence and accuracy, averaged over the bins by how many answers each holds (Guo et
al., 2017). Temperature scaling divides the logits by one number T, fitted on the validation
split by minimizing the cross-entropy: it changes no answer, only how sure each one is.
`not_sure_threshold` and `abstain` are the page's rule: below a confidence, say "not sure".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reliability(
    probs: torch.Tensor, labels: torch.Tensor, bins: int = 15
) -> dict[str, torch.Tensor]:
    """Per confidence bin (equal widths on (0, 1]): mean confidence, accuracy and count."""
    confidence, answer = probs.max(1)
    right = answer.eq(labels).float()
    which = (confidence * bins).ceil().clamp(1, bins).long() - 1
    count = torch.bincount(which, minlength=bins).float()
    per = count.clamp(min=1)
    return {
        "confidence": torch.bincount(which, confidence, minlength=bins) / per,
        "accuracy": torch.bincount(which, right, minlength=bins) / per,
        "count": count,
    }


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """The expected calibration error, in percentage points (0 is perfectly calibrated)."""
    table = reliability(probs, labels, bins)
    gaps = (table["confidence"] - table["accuracy"]).abs()
    return 100.0 * float((gaps * table["count"]).sum() / table["count"].sum())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T that minimizes the cross-entropy of softmax(logits / T); fit it on validation data."""
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    logits = logits.double()
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def not_sure_threshold(probs: torch.Tensor, labels: torch.Tensor, lose: float = 0.01) -> float:
    """The confidence below which at most a fraction `lose` of the right answers fall.

    Computed on clean validation images: the rule then costs about that share of right answers
    on digits like MNIST's, and whatever it catches elsewhere is measured, not assumed.
    """
    confidence, answer = probs.max(1)
    right = confidence[answer.eq(labels)].double()
    return float(torch.quantile(right, lose))


def abstain(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> dict[str, float]:
    """What the rule does on a set: % answered right, % wrong, % "not sure", and what it moved.

    `caught`: the share of the wrong answers that became "not sure"; `lost`: the share of the
    right answers that did.
    """
    confidence, answer = probs.max(1)
    right = answer.eq(labels)
    unsure = confidence < threshold
    n = len(labels)
    return {
        "right": 100.0 * float((right & ~unsure).sum()) / n,
        "wrong": 100.0 * float((~right & ~unsure).sum()) / n,
        "not_sure": 100.0 * float(unsure.sum()) / n,
        "caught": 100.0 * float((~right & unsure).sum()) / max(1, int((~right).sum())),
        "lost": 100.0 * float((right & unsure).sum()) / max(1, int(right.sum())),
    }


@torch.no_grad()
def page_rule(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, lose: float = 0.01
) -> dict[str, float]:
    """The page's rule for `model`, fitted on (normalized) validation images: T and threshold.

    Rounded to 4 decimals, as the page stores them; `not_sure_threshold` runs on the
    temperature-scaled probabilities.
    """
    logits = model.eval()(images).double()
    temperature = round(fit_temperature(logits, labels), 4)
    probs = F.softmax(logits / temperature, dim=1)
    threshold = round(not_sure_threshold(probs, labels, lose), 4)
    return {"temperature": temperature, "not_sure_below": threshold, "lose": lose}
