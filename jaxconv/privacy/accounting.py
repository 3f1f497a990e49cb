"""Privacy accounting for DP-SGD through Google's ``dp_accounting`` library.

DP-SGD with Poisson sampling at rate q, noise multiplier sigma and T steps is
T compositions of the Poisson-subsampled Gaussian mechanism. Accountants:

- ``'rdp'``: Renyi DP (Mironov 2017; Mironov, Talwar & Zhang 2019) converted to
  (epsilon, delta) with the improved bound of Balle et al. 2020, as
  ``dp_accounting.rdp.RdpAccountant`` does. The default: fast and standard.
- ``'rdp_classic'``: the same RDP curve over TF Privacy's orders, converted with
  Mironov's original ``epsilon = min_a rdp(a) + log(1/delta) / (a - 1)``. Looser;
  it reproduces the epsilons published until about 2022 (TF Privacy's tutorials,
  Papernot et al. 2021, Tramer & Boneh 2021), so use it to compare with them.
- ``'pld'``: privacy loss distributions (Koskela et al. 2020; Doroshenko et al.
  2022): the tightest, and slower.

Shuffled fixed-size batches are accounted for as if Poisson-sampled at rate
batch_size / num_examples, the common practice (an approximation, see Chua et
al. 2024, "How Private are DP-SGD Implementations?").
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Iterator
from typing import Literal

import numpy as np

Accountant = Literal["rdp", "rdp_classic", "pld"]
ACCOUNTANTS = ("rdp", "rdp_classic", "pld")
CLASSIC_ORDERS = tuple([1 + x / 10 for x in range(1, 100)] + list(range(12, 64)))  # TF Privacy's


def epsilon(
    sampling_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    *,
    accountant: Accountant = "rdp",
) -> float:
    """The epsilon of DP-SGD after ``steps`` steps at ``sampling_rate`` q and ``noise_multiplier`` sigma.

    >>> round(epsilon(256 / 60_000, 1.12, 60 * 234, 1e-5, accountant="rdp_classic"), 2)  # TF Privacy
    2.92
    """
    _check(sampling_rate, steps, delta)
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier={noise_multiplier} must be >= 0 (0: no privacy)")
    if noise_multiplier == 0 or steps == 0:
        return math.inf if steps else 0.0
    with _quiet_library():
        return _accountant_epsilon(sampling_rate, noise_multiplier, steps, delta, accountant)


def _accountant_epsilon(
    sampling_rate: float, noise_multiplier: float, steps: int, delta: float, accountant: Accountant
) -> float:
    import dp_accounting  # here, not at the top: it loads SciPy, 1.6 s of every `import jaxconv`

    event = dp_accounting.PoissonSampledDpEvent(
        sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    if accountant == "pld":
        pld = dp_accounting.pld.PLDAccountant()
        pld.compose(event, steps)
        return float(pld.get_epsilon(delta))
    if accountant == "rdp":
        rdp = dp_accounting.rdp.RdpAccountant()
        rdp.compose(event, steps)
        return float(rdp.get_epsilon(delta))
    if accountant == "rdp_classic":
        rdp = dp_accounting.rdp.RdpAccountant(CLASSIC_ORDERS)
        rdp.compose(event, steps)
        orders = np.asarray(CLASSIC_ORDERS)
        return float(np.min(rdp._rdp + math.log(1 / delta) / (orders - 1)))  # the library keeps the curve
    raise ValueError(f"accountant={accountant!r} is not an accountant; choose one of {ACCOUNTANTS}")


def noise_multiplier_for(
    target_epsilon: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    *,
    accountant: Accountant = "rdp",
    tolerance: float = 1e-3,
) -> float:
    """The smallest noise multiplier (to ``tolerance``, relative) whose epsilon is at most ``target_epsilon``.

    Bisection on the accountant's epsilon, which falls as the noise grows; the
    answer errs on the noisy side, so its epsilon never exceeds the target.

    >>> round(noise_multiplier_for(2.92, 256 / 60_000, 60 * 234, 1e-5, accountant="rdp_classic"), 2)
    1.12
    """
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon={target_epsilon} must be positive")
    _check(sampling_rate, steps, delta)
    return _bisect_noise(target_epsilon, sampling_rate, steps, delta, accountant, tolerance)


@functools.lru_cache(maxsize=256)
def _bisect_noise(
    target_epsilon: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: Accountant,
    tolerance: float,
) -> float:
    """`noise_multiplier_for`'s bisection, remembered: each step asks the accountant (about 0.5 s for
    RDP), and a table or grid of private runs asks for the same plan again."""

    def private_enough(noise: float) -> bool:
        return epsilon(sampling_rate, noise, steps, delta, accountant=accountant) <= target_epsilon

    low, high = 0.0, 1.0
    while not private_enough(high):
        low, high = high, 2 * high
        if high > 1e6:
            raise ValueError(
                f"no noise multiplier up to 1e6 reaches epsilon={target_epsilon} at sampling rate "
                f"{sampling_rate}, {steps} steps and delta={delta}; raise epsilon or delta"
            )
    while high - low > tolerance * high:
        middle = (low + high) / 2
        low, high = (low, middle) if private_enough(middle) else (middle, high)
    return high


@contextlib.contextmanager
def _quiet_library() -> Iterator[None]:
    """Hide dp_accounting's warnings: at small noises its series for some RDP orders do not
    converge and it leaves those orders out (the epsilon is still a valid bound) with a warning
    per order, dozens of lines that say nothing a user can act on."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check(sampling_rate: float, steps: int, delta: float) -> None:
    if not 0 < sampling_rate <= 1:
        raise ValueError(
            f"sampling_rate={sampling_rate} must be in (0, 1]: the batch size over the number of examples"
        )
    if steps < 0 or int(steps) != steps:
        raise ValueError(f"steps={steps} must be a non-negative int")
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta} must be in (0, 1); usually below 1 / num_examples")
