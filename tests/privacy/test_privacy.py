"""`jc.privacy`: clipping against NumPy, ghost clipping against a loop of per-example gradients,
the Gaussian noise's statistics, the accountant against published epsilons, and the samplers.
"""

from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import optimize, stats

import jaxconv as jc
from jaxconv import privacy
from jaxconv.per_example import ghost_grad_norms, net_loss

NUM = 6
KEY = jax.random.key(3)


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


# --- NumPy references -----------------------------------------------------------------------------


def numpy_clipped_sum(grads, clip, mask=None):
    """Sum of g_i * min(1, C / ||g_i||) over the rows of every leaf, one example at a time."""
    leaves, treedef = jax.tree.flatten(grads)
    leaves = [np.asarray(leaf, np.float64) for leaf in leaves]
    total = [np.zeros(leaf.shape[1:]) for leaf in leaves]
    for i in range(leaves[0].shape[0]):
        norm = math.sqrt(sum(float((leaf[i] ** 2).sum()) for leaf in leaves))
        weight = (clip / norm if norm > clip else 1.0) * (1.0 if mask is None else float(mask[i]))
        total = [t + weight * leaf[i] for t, leaf in zip(total, leaves, strict=True)]
    return jax.tree.unflatten(treedef, total)


def loop_of_grads(loss_fn, params, state, x, y, key):
    grad_fn = jax.jit(jax.grad(loss_fn))
    grads = [
        grad_fn(params, state, x[i : i + 1], y[i : i + 1], jax.random.fold_in(key, i)) for i in range(len(x))
    ]
    return jax.tree.map(lambda *leaves: np.stack(leaves), *grads)


def numpy_norms(grads):
    return np.sqrt(sum((np.asarray(leaf).reshape(NUM, -1) ** 2).sum(1) for leaf in jax.tree.leaves(grads)))


def assert_trees_close(actual, expected, rtol=1e-4, atol=1e-6):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=atol), actual, expected)


# A net with every kind of layer ghost clipping meets: a conv whose norm is cheaper directly (36
# positions), one cheaper by the ghost norm (4 positions, 72 x 8 kernel), a Dense, a grouped conv
# and a GroupNorm (per-example gradients by vmap), a projection shortcut and Dropout.
NET = jc.serial(
    jc.Conv(8, 3, padding=1), jc.GroupNorm(2), jc.Relu, jc.Dropout(0.3), jc.MaxPool(3),
    jc.residual(jc.serial(jc.Conv(8, 3, padding=1), jc.Relu), shortcut=jc.Conv(8, 1, groups=2)),
    jc.Flatten, jc.Dense(4),
)  # fmt: skip


@pytest.fixture(scope="module")
def case():
    _, params, state = NET.init(jax.random.key(0), (-1, 6, 6, 2))
    x = jax.random.normal(jax.random.key(1), (NUM, 6, 6, 2))
    y = jnp.arange(NUM) % 4
    with jax.default_matmul_precision("highest"):
        grads = loop_of_grads(net_loss(NET), params, state, x, y, KEY)
    norms = numpy_norms(grads)
    clip = float(np.median(norms))  # half the examples are clipped
    return params, state, x, y, grads, norms, clip


# --- clipping -------------------------------------------------------------------------------------


def test_clip_per_example_equals_numpy():
    grads = {"a": jax.random.normal(KEY, (5, 3, 2)), "b": {"c": jnp.arange(5.0)[:, None] * jnp.ones((5, 4))}}
    grads = jax.tree.map(
        lambda leaf: leaf * jnp.array([0.01, 0.1, 1.0, 3.0, 0.0]).reshape(5, *[1] * (leaf.ndim - 1)), grads
    )
    mask = np.array([1, 1, 0, 1, 1])
    assert_trees_close(privacy.clip_per_example(grads, 0.5), numpy_clipped_sum(grads, 0.5))
    assert_trees_close(privacy.clip_per_example(grads, 0.5, mask), numpy_clipped_sum(grads, 0.5, mask))
    traced_clip = jax.jit(privacy.clip_per_example)(grads, 0.5)  # a traced norm, e.g. adaptive clipping
    assert_trees_close(traced_clip, numpy_clipped_sum(grads, 0.5))


@pytest.mark.parametrize("strategy, chunk_size", [("loop", None), ("chunked", 4)])
def test_clipped_grad_sum_equals_numpy_clipping_of_the_loop(case, strategy, chunk_size):
    params, state, x, y, grads, norms, clip = case
    mask = jnp.array([1, 0, 1, 1, 1, 0])
    fn = jax.jit(privacy.clipped_grad_sum(net_loss(NET), clip, strategy=strategy, chunk_size=chunk_size))
    clipped, actual_norms = fn(params, state, x, y, KEY, mask)
    np.testing.assert_allclose(actual_norms, norms, rtol=1e-5)
    assert_trees_close(clipped, numpy_clipped_sum(grads, clip, mask))


def test_ghost_clipping_equals_numpy_clipping_of_the_loop(case):
    params, state, x, y, grads, norms, clip = case
    mask = jnp.array([1, 1, 1, 0, 1, 1])
    clipped, actual_norms = jax.jit(privacy.ghost_clipped_grad_sum(NET, clip))(params, state, x, y, KEY, mask)
    np.testing.assert_allclose(actual_norms, norms, rtol=1e-5)
    assert_trees_close(clipped, numpy_clipped_sum(grads, clip, mask))


def test_ghost_layer_norms_equal_numpy_norms_of_each_layer(case):
    params, state, x, y, grads, norms, _ = case
    global_norms, layer_norms = jax.jit(ghost_grad_norms(NET))(params, state, x, y, KEY)
    np.testing.assert_allclose(global_norms, norms, rtol=1e-5)
    paths = ["conv_0", "groupnorm_1", "residual_5/body/conv_0", "residual_5/shortcut", "dense_7"]
    assert sorted(layer_norms) == sorted(paths)
    for path in paths:
        layer = grads
        for name in path.split("/"):
            layer = layer[name]
        np.testing.assert_allclose(layer_norms[path], numpy_norms(layer), rtol=1e-5, err_msg=path)


# --- the Gaussian mechanism -----------------------------------------------------------------------


def test_dp_aggregate_without_noise_is_the_clipped_mean_like_optax(case):
    *_, grads, _, clip = case
    transform = privacy.dp_aggregate(clip, 0.0, KEY)
    updates, state = jax.jit(transform.update)(grads, transform.init(None))
    expected = jax.tree.map(lambda leaf: leaf / NUM, numpy_clipped_sum(grads, clip))
    assert_trees_close(updates, expected)
    assert int(state.steps) == 1
    theirs = optax.contrib.differentially_private_aggregate(clip, 0.0, KEY)
    assert_trees_close(updates, jax.jit(theirs.update)(grads, theirs.init(None))[0])


def test_dp_aggregate_masks_padding_and_divides_by_the_expected_batch_size(case):
    *_, grads, _, clip = case
    mask = jnp.array([1, 1, 0, 1, 0, 1])
    transform = privacy.dp_aggregate(clip, 0.0, 0, batch_size=2.5)
    updates, _ = jax.jit(transform.update)(grads, transform.init(None), mask=mask)
    assert_trees_close(updates, jax.tree.map(lambda leaf: leaf / 2.5, numpy_clipped_sum(grads, clip, mask)))
    summed = privacy.dp_aggregate(clip, 0.0, 0, batch_size=2.5, summed=True)
    clipped = numpy_clipped_sum(grads, clip, mask)
    assert_trees_close(jax.jit(summed.update)(clipped, summed.init(None))[0], updates)


def test_noise_has_std_noise_multiplier_times_clip_over_batch_size():
    size, clip, noise_multiplier, batch_size = 200_000, 0.5, 2.0, 10.0
    grads = {"w": jnp.zeros((4, size))}
    transform = privacy.dp_aggregate(clip, noise_multiplier, KEY, batch_size=batch_size)
    state = transform.init(None)
    update = jax.jit(transform.update)
    first, state = update(grads, state)
    second, state = update(grads, state)
    expected_std = noise_multiplier * clip / batch_size  # 0.1
    for noise in (np.asarray(first["w"]), np.asarray(second["w"])):
        assert abs(noise.std() / expected_std - 1) < 0.01  # relative standard error 0.16%
        assert abs(noise.mean()) < 5 * expected_std / math.sqrt(size)
        assert stats.kstest(noise / expected_std, "norm").pvalue > 1e-4
    assert abs(np.corrcoef(first["w"], second["w"])[0, 1]) < 0.01  # fresh noise every step
    assert int(state.steps) == 2


def test_dp_sgd_steps_against_the_clipped_mean(case):
    params, *_, grads, _, clip = case
    optimizer = privacy.dp_sgd(0.1, clip, 0.0, KEY)
    updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
    new_params = optax.apply_updates(params, updates)
    expected = jax.tree.map(lambda p, s: p - 0.1 * s / NUM, params, numpy_clipped_sum(grads, clip))
    assert_trees_close(new_params, expected)


def test_dp_aggregate_errors():
    with pytest.raises(ValueError, match=r"l2_norm_clip=0 must be positive"):
        privacy.dp_aggregate(0, 1.0, KEY)
    with pytest.raises(ValueError, match=r"noise_multiplier=-1\) must be >= 0"):
        privacy.dp_aggregate(1.0, -1, KEY)
    with pytest.raises(ValueError, match=r"summed=True\) needs batch_size"):
        privacy.dp_aggregate(1.0, 1.0, KEY, summed=True)
    transform = privacy.dp_aggregate(1.0, 1.0, KEY)
    with pytest.raises(ValueError, match=r"got a mask .* no batch_size: give batch_size=sampling_rate"):
        transform.update({"w": jnp.ones((2, 3))}, transform.init(None), mask=jnp.ones(2))


# --- accounting -----------------------------------------------------------------------------------

MNIST_STEPS_PER_EPOCH = 60_000 // 256


@pytest.mark.parametrize(
    "noise_multiplier, epochs, published",
    [(1.12, 60, 2.92), (0.6, 30, 9.74), (1.2, 10, 1.20)],
)
def test_classic_rdp_reproduces_tf_privacy_mnist_tutorial(noise_multiplier, epochs, published):
    """tensorflow/privacy tutorials/README.md: batch 256 of 60,000, delta 1e-5 (RDP, 2019 conversion)."""
    steps = epochs * MNIST_STEPS_PER_EPOCH
    classic = privacy.epsilon(256 / 60_000, noise_multiplier, steps, 1e-5, accountant="rdp_classic")
    assert classic == pytest.approx(published, rel=2e-3)
    tighter = privacy.epsilon(256 / 60_000, noise_multiplier, steps, 1e-5)
    assert 0.75 * published < tighter < classic  # Balle et al. 2020's conversion only tightens


def test_classic_rdp_reproduces_abadi_et_al():
    """Abadi et al. 2016, section 3.1: q = 0.01, sigma = 4, T = 10,000, delta = 1e-5 gives epsilon = 1.26."""
    assert privacy.epsilon(0.01, 4.0, 10_000, 1e-5, accountant="rdp_classic") == pytest.approx(
        1.26, abs=0.005
    )


def test_pld_matches_the_analytic_gaussian_mechanism():
    """Without subsampling, k steps at sigma are one Gaussian of sigma / sqrt(k) (Balle & Wang 2018):
    delta(eps) = Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu), mu = sqrt(k) / sigma."""
    sigma, steps, delta = 3.0, 10, 1e-6
    mu = math.sqrt(steps) / sigma

    def excess(eps):
        return stats.norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * stats.norm.cdf(-mu / 2 - eps / mu) - delta

    exact = optimize.brentq(excess, 0.0, 50.0)
    pld = privacy.epsilon(1.0, sigma, steps, delta, accountant="pld")
    assert exact <= pld < exact + 0.01  # the PLD accountant is pessimistic by its discretisation
    assert (
        pld
        < privacy.epsilon(1.0, sigma, steps, delta)
        < privacy.epsilon(1.0, sigma, steps, delta, accountant="rdp_classic")
    )


def test_noise_multiplier_for_inverts_epsilon():
    steps = 60 * MNIST_STEPS_PER_EPOCH
    noise = privacy.noise_multiplier_for(2.92, 256 / 60_000, steps, 1e-5, accountant="rdp_classic")
    assert noise == pytest.approx(1.12, abs=0.005)  # the tutorial's pair (2.92, 1.12)
    noise = privacy.noise_multiplier_for(3.0, 256 / 60_000, steps, 1e-5, tolerance=1e-4)
    assert 2.99 < privacy.epsilon(256 / 60_000, noise, steps, 1e-5) <= 3.0


def test_accounting_edge_cases_and_errors():
    assert privacy.epsilon(0.01, 0.0, 10, 1e-5) == math.inf
    assert privacy.epsilon(0.01, 1.0, 0, 1e-5) == 0.0
    with pytest.raises(ValueError, match=r"sampling_rate=0 must be in \(0, 1\]"):
        privacy.epsilon(0, 1.0, 10, 1e-5)
    with pytest.raises(ValueError, match=r"delta=1 must be in \(0, 1\)"):
        privacy.epsilon(0.1, 1.0, 10, 1)
    with pytest.raises(ValueError, match=r"accountant='moments' is not an accountant.*'pld'"):
        privacy.epsilon(0.1, 1.0, 10, 1e-5, accountant="moments")
    # the classic conversion never goes below log(1/delta) / 62, whatever the noise
    with pytest.raises(
        ValueError, match=r"no noise multiplier up to 1e6 reaches epsilon=0.1 .*raise epsilon"
    ):
        privacy.noise_multiplier_for(0.1, 1.0, 10, 1e-5, accountant="rdp_classic")


# --- sampling -------------------------------------------------------------------------------------


def test_poisson_batches_have_fixed_shapes_masks_and_the_expected_size():
    num, rate, steps = 1000, 0.05, 200
    batches = list(privacy.poisson_batches(num, rate, KEY, steps=steps))
    assert len(batches) == steps
    assert len({batch.indices.shape for batch in batches}) == 1  # one shape: one compiled step
    sizes, counts = [], np.zeros(num)
    for indices, mask in batches:
        real = np.asarray(indices)[np.asarray(mask)]
        assert np.all(np.diff(real) > 0) and real.min(initial=0) >= 0 and real.max(initial=0) < num
        assert np.asarray(mask)[: len(real)].all() and not np.asarray(mask)[len(real) :].any()
        sizes.append(len(real))
        counts[real] += 1
    standard_error = math.sqrt(num * rate * (1 - rate) / steps)
    assert abs(np.mean(sizes) - num * rate) < 5 * standard_error
    assert abs(counts.mean() / steps - rate) < 5 * math.sqrt(rate * (1 - rate) / (steps * num))


def test_poisson_batches_refuse_to_drop_examples():
    with pytest.raises(
        ValueError, match=r"drew \d+ examples but max_batch_size is 10 .*larger max_batch_size"
    ):
        list(privacy.poisson_batches(100, 0.5, KEY, steps=1, max_batch_size=10))


def test_shuffled_batches_cover_each_example_once_per_epoch():
    batches = list(privacy.shuffled_batches(10, 3, KEY, steps=6))
    first_epoch = np.concatenate([np.asarray(b.indices) for b in batches[:3]])
    second_epoch = np.concatenate([np.asarray(b.indices) for b in batches[3:]])
    assert len(set(first_epoch)) == 9 and len(set(second_epoch)) == 9  # the remainder of 1 is dropped
    assert not np.array_equal(first_epoch, second_epoch)
    assert all(bool(b.mask.all()) and b.indices.shape == (3,) for b in batches)
    with pytest.raises(ValueError, match=r"batch_size=11\) must be in \[1, 10\]"):
        next(privacy.shuffled_batches(10, 11, KEY))


def test_the_accountants_convergence_warnings_are_not_shown(caplog):
    """At small noises dp_accounting leaves some RDP orders out with a warning each (the run's
    epsilon of every epoch met them): the bound stands, the warnings are hidden."""
    with caplog.at_level(logging.WARNING, logger="absl"):
        spent = privacy.epsilon(8192 / 60_000, 1.1455, 7, 1e-5)
        assert logging.getLogger("absl").level == logging.WARNING  # the level is given back
    assert spent == pytest.approx(2.998, abs=1e-3)
    assert [record.getMessage() for record in caplog.records if record.name == "absl"] == []
