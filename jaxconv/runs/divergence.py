"""When a run has diverged: the rule `fit` applies to the epoch records after each epoch, kept
apart so that every driver can apply it alike.

A run has diverged when, after an epoch (K classes, ``ln K`` the loss of a uniform guess):

1. its mean training loss is not finite;
2. its mean training loss is more than ``loss_factor`` (3) times ``ln K``: a net that guesses
   uniformly does better; or more than ``rise_factor`` (10) times its best epoch's and above
   ``ln K``: it was learning, then exploded;
3. for the last ``chance_epochs`` (3) epochs its test accuracy was at most ``chance_margin``
   (1.5) times chance ``1/K`` and its training loss at least ``stuck_fraction`` (0.9) of
   ``ln K``: it learns nothing (a net that exploded and died, or a learning rate far too low).

Runs with the default recipe (AdamW at 3e-3, label smoothing 0.1) on Fashion-MNIST have a
training loss of 0.7-1.4 (ln 10 = 2.3) and test accuracy above 75% from their first epoch, far
from each threshold (the 20 recorded in experiments/results never trip it); ``jaxconv train
--lr 1000`` trips rule 2 in its first epoch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

FIX = (
    "lower the learning rate (--lr, e.g. by 10x), add warmup (--warmup-epochs 1) or check the data, "
    "and start a new run"
)


@dataclasses.dataclass(frozen=True)
class Divergence:
    """The divergence rule with its thresholds (the module's docstring explains each)."""

    loss_factor: float = 3.0
    rise_factor: float = 10.0
    chance_epochs: int = 3
    chance_margin: float = 1.5
    stuck_fraction: float = 0.9

    def check(self, history: Sequence[Mapping[str, Any]], num_classes: int) -> str | None:
        """Why the run whose epoch records (``train_loss``, ``test_top1``) are ``history`` has
        diverged, judged after its last epoch; None while it has not."""
        uniform = math.log(num_classes)
        loss = float(history[-1]["train_loss"])
        best = min(float(record["train_loss"]) for record in history)
        epoch = len(history)
        if not_finite := non_finite(history):
            return not_finite
        if loss > self.loss_factor * uniform:
            return (
                f"the training loss of epoch {epoch} is {loss:.4g}, more than {self.loss_factor:g} times "
                f"the {uniform:.3g} of a uniform guess over {num_classes} classes"
            )
        if loss > max(self.rise_factor * best, uniform):
            return f"the training loss rose to {loss:.4g} in epoch {epoch}, from {best:.4g} at its best"
        recent = history[-self.chance_epochs :]
        stuck = len(recent) == self.chance_epochs and all(
            record["test_top1"] <= self.chance_margin / num_classes
            and record["train_loss"] >= self.stuck_fraction * uniform
            for record in recent
        )
        if stuck:
            return (
                f"the test accuracy has been at chance ({1 / num_classes:.0%}) for {self.chance_epochs} "
                f"epochs, with a training loss of {loss:.4g}: the net learns nothing"
            )
        return None


DEFAULT_RULE = Divergence()
"""The rule `jaxconv.runs.fit` applies unless told otherwise."""


def diverged_models(
    rule: Divergence | None,
    history: Sequence[Mapping[str, Any]],
    num_classes: int,
    before: Sequence[str | None],
) -> list[str | None]:
    """Why each of M models trained together (`fit_many`'s records: each metric a list of M) has
    diverged after the last record, None for a model that has not; a reason in ``before`` (the
    judgement after the record before) is kept. ``rule`` None judges a non-finite loss alone."""
    reasons = list(before)
    for model, reason in enumerate(before):
        if reason is not None:
            continue
        own = [{name: record[name][model] for name in ("train_loss", "test_top1")} for record in history]
        reasons[model] = rule.check(own, num_classes) if rule is not None else non_finite(own)
    return reasons


def non_finite(history: Sequence[Mapping[str, Any]]) -> str | None:
    """Rule 1 alone: why the last record's training loss is not finite, None if it is."""
    loss = float(history[-1]["train_loss"])
    return None if math.isfinite(loss) else f"the training loss of epoch {len(history)} is {loss}"
