"""Differential privacy for jaxconv nets: per-example clipping, DP-SGD, sampling and accounting.

A DP-SGD step (Abadi et al. 2016) clips each example's gradient to L2 norm C,
sums, adds Gaussian noise of std ``noise_multiplier * C`` and divides by the
(expected) batch size; the accountant turns the sampling rate, noise
multiplier and number of steps into (epsilon, delta).

- clipping: `clip_factors`, `clip_per_example`, `clipped_grad_sum` (strategies 'einsum',
  'ghost', 'vmap', 'chunked', 'loop'), `ghost_clipped_grad_sum` (per-example norms from each
  layer's inputs and output gradients, then the clipped sum in the same pass: Bu et al. 2022
  and 2023's book-keeping; the taps themselves, `ghost_grad_norms` and
  `tapped_per_example_grads`, are in `jaxconv.per_example`);
- the Gaussian mechanism: `noisy_mean`, `dp_aggregate` (an Optax transformation),
  `dp_sgd` (the optimiser);
- sampling: `poisson_batches`, `shuffled_batches`, `poisson_batch`;
- accounting: `epsilon`, `noise_multiplier_for` (through ``dp_accounting``);
- virtual batches: `in_chunks`, `chunked_batch_size` (a logical batch in physical chunks).
"""

from jaxconv.privacy.accounting import ACCOUNTANTS, Accountant, epsilon, noise_multiplier_for
from jaxconv.privacy.clipping import clip_factors, clip_per_example, clipped_grad_sum, ghost_clipped_grad_sum
from jaxconv.privacy.mechanism import DPAggregateState, dp_aggregate, dp_sgd, noisy_mean
from jaxconv.privacy.sampling import (
    Batch,
    padded_batch_size,
    poisson_batch,
    poisson_batches,
    shuffled_batches,
)
from jaxconv.privacy.virtual import chunked_batch_size, in_chunks

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "Batch",
    "DPAggregateState",
    "chunked_batch_size",
    "clip_factors",
    "clip_per_example",
    "clipped_grad_sum",
    "dp_aggregate",
    "dp_sgd",
    "epsilon",
    "ghost_clipped_grad_sum",
    "in_chunks",
    "noise_multiplier_for",
    "noisy_mean",
    "padded_batch_size",
    "poisson_batch",
    "poisson_batches",
    "shuffled_batches",
]
