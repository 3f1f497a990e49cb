"""Virtual batches (`jaxconv.privacy.in_chunks`): a logical Poisson batch computed in physical
chunks equals the one-shot computation, skips the chunks of padding, and compiles once whatever
the realised batch size; the De et al. (2022) recipe's epsilon equals dp_accounting's."""

from __future__ import annotations

import chex
import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv as jc
from jaxconv.per_example import net_loss
from jaxconv.privacy import chunked_batch_size, clipped_grad_sum, epsilon, in_chunks


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def clipped(net, clip=0.5):
    fn = clipped_grad_sum(net_loss(net), clip)
    return lambda params, state, x, y, key, mask: fn(params, state, x, y, key, mask)


@pytest.mark.parametrize("rows, chunk, real", [(24, 8, 14), (4096, 256, 3800)])
def test_chunks_equal_the_one_shot_sum(rows, chunk, real):
    """A conv net on 24 rows in chunks of 8, and a logical batch of 4096 in chunks of 256 (a
    Dense net, to stay cheap); the last chunks hold only padding."""
    net = (
        jc.serial(jc.Conv(3, 3), jc.Relu, jc.Flatten, jc.Dense(4))
        if rows < 100
        else jc.serial(jc.Flatten, jc.Dense(4))
    )
    _, params, state = net.init(jax.random.key(0), (-1, 5, 5, 1))
    x = jax.random.normal(jax.random.key(1), (rows, 5, 5, 1))
    y = jnp.arange(rows) % 4
    mask = jnp.arange(rows) < real
    one_shot, norms = jax.jit(clipped(net))(params, state, x, y, None, mask)
    chunked, chunk_norms = jax.jit(in_chunks(clipped(net), chunk))(params, state, x, y, None, mask)
    np.testing.assert_allclose(flat(chunked), flat(one_shot), rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(chunk_norms[:real], norms[:real], rtol=1e-5)
    skipped = rows - chunk * -(-real // chunk)
    assert skipped > 0 and np.all(np.asarray(chunk_norms)[rows - skipped :] == 0)


def test_a_varying_poisson_batch_size_compiles_once():
    net = jc.serial(jc.Flatten, jc.Dense(3))
    _, params, state = net.init(jax.random.key(0), (-1, 4, 4, 1))
    traced = chex.assert_max_traces(in_chunks(clipped(net), 4), n=1)
    step = jax.jit(traced)
    x, y = jnp.ones((16, 4, 4, 1)), jnp.zeros(16, int)
    for real in (3, 9, 16, 0):
        summed, _ = step(params, state, x, y, jax.random.key(real), jnp.arange(16) < real)
        assert np.isfinite(flat(summed)).all()
    assert float(jnp.abs(flat(summed)).sum()) == 0.0  # no real row: every chunk skipped


def test_chunk_sizes_are_checked():
    assert chunked_batch_size(4400, 256) == 4608
    with pytest.raises(ValueError, match="physical_batch_size=0 must be a positive int"):
        chunked_batch_size(10, 0)
    net = jc.serial(jc.Flatten, jc.Dense(3))
    _, params, state = net.init(jax.random.key(0), (-1, 2, 2, 1))
    with pytest.raises(
        ValueError, match=r"10 rows does not split into chunks of physical_batch_size=4; pad it to 12"
    ):
        in_chunks(clipped(net), 4)(
            params, state, jnp.ones((10, 2, 2, 1)), jnp.zeros(10, int), None, jnp.ones(10, bool)
        )


def test_de_et_al_recipe_epsilon_equals_dp_accounting():
    """CIFAR-10 (50,000 examples), Poisson batches of 4096, sigma 10, 875 steps, delta 1e-5: De et
    al. (2022), Table 9, report epsilon 1; dp_accounting's RDP accountant, called here directly."""
    rate, sigma, steps, delta = 4096 / 50_000, 10.0, 875, 1e-5
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    reference = accountant.get_epsilon(delta)
    assert epsilon(rate, sigma, steps, delta) == pytest.approx(reference, rel=1e-9)
    assert round(reference, 1) == 1.0
