"""Differential privacy for jaxconv nets: per-example clipping, DP-SGD, sampling and accounting.

A DP-SGD step (Abadi et al. 2016) clips each example's gradient to L2 norm C,
sums, adds Gaussian noise of std ``noise_multiplier * C`` and divides by the
(expected) batch size; the accountant turns the sampling rate, noise
multiplier and number of steps into (epsilon, delta).

- clipping: `clip_per_example`, `clipped_grad_sum` (memory-aware),
  `ghost_clipped_grad_sum` (no per-example gradients, Bu et al. 2022),
  `ghost_grad_norms`;
- the Gaussian mechanism: `noisy_mean`, `dp_aggregate` (an Optax transformation),
  `dp_sgd` (the optimiser);
- sampling: `poisson_batches`, `shuffled_batches`, `poisson_batch`;
- accounting: `epsilon`, `noise_multiplier_for` (through ``dp_accounting``).
"""

from jaxconv.privacy.accounting import ACCOUNTANTS, Accountant, epsilon, noise_multiplier_for
from jaxconv.privacy.clipping import (
    DPAggregateState,
    clip_factors,
    clip_per_example,
    clipped_grad_sum,
    dp_aggregate,
    dp_sgd,
    noisy_mean,
)
from jaxconv.privacy.ghost import ghost_clipped_grad_sum, ghost_grad_norms
from jaxconv.privacy.sampling import Batch, poisson_batch, poisson_batches, shuffled_batches

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "Batch",
    "DPAggregateState",
    "clip_factors",
    "clip_per_example",
    "clipped_grad_sum",
    "dp_aggregate",
    "dp_sgd",
    "epsilon",
    "ghost_clipped_grad_sum",
    "ghost_grad_norms",
    "noise_multiplier_for",
    "noisy_mean",
    "poisson_batch",
    "poisson_batches",
    "shuffled_batches",
]
