"""Augmentation multiplicity (De et al. 2022): each example is K augmented copies, its gradient
the mean of theirs, clipped as one. Every strategy's clipped sum, per-example gradients and
norms equal a reference that takes each copy's gradient alone with `jax.grad`, averages the K
in NumPy, and clips in NumPy; the norm of the average has cross terms, so a strategy that
summed per-copy norms would fail."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv as jc
from jaxconv.models.resnet import resnet
from jaxconv.per_example import net_loss, per_example_grad_norms, per_example_grads
from jaxconv.privacy import clipped_grad_sum

NUM, COPIES, CLASSES, CLIP = 3, 4, 3, 0.5
SHAPE = (6, 6, 2)


def conv_net():
    return jc.serial(
        jc.Conv(4, 3, padding=1), jc.Relu, jc.Conv(5, 3, stride=2), jc.Relu, jc.Flatten, jc.Dense(CLASSES)
    )


def residual_net():
    body = jc.serial(jc.Conv(4, 3, padding=1), jc.Relu, jc.Conv(4, 3, padding=1))
    return jc.serial(jc.Conv(4, 1), jc.residual(body), jc.Relu, jc.GlobalAvgPool, jc.Dense(CLASSES))


def small_wrn():
    """A pre-activation Wide ResNet with GroupNorm and weight-standardised convs (De et al.'s norm)."""
    return resnet(
        (1, 1), num_classes=CLASSES, widths=(4, 8), stem_width=4, cifar=True, preact=True, norm="ws_group"
    )


NETS = {"conv": conv_net, "residual": residual_net, "wrn_ws_group": small_wrn}


def setup(name):
    net = NETS[name]()
    _, params, state = net.init(jax.random.key(0), (-1, *SHAPE))
    x = jax.random.normal(jax.random.key(1), (NUM, COPIES, *SHAPE))
    y = jnp.arange(NUM) % CLASSES
    return net, params, state, x, y


def reference_grads(net, params, state, x, y) -> np.ndarray:
    """(N, P): each example's gradient, the mean over its copies of each copy's own gradient."""

    def copy_loss(params, x_copy, label):
        logits, _ = net.apply(params, state, x_copy[None], train=True)
        return jc.losses.cross_entropy(logits, label[None])

    grad_fn, rows = jax.jit(jax.grad(copy_loss)), []
    for i in range(NUM):
        copies = [grad_fn(params, x[i, k], y[i]) for k in range(COPIES)]
        flat = [np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(g)]) for g in copies]
        rows.append(np.mean(flat, axis=0))
    return np.stack(rows)


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


@pytest.fixture(scope="module", params=sorted(NETS))
def case(request):
    net, params, state, x, y = setup(request.param)
    return net, params, state, x, y, reference_grads(net, params, state, x, y)


@pytest.mark.parametrize("strategy", ["vmap", "loop", "chunked", "einsum", "ghost"])
def test_clipped_sum_of_averaged_copies(case, strategy):
    net, params, state, x, y, reference = case
    norms = np.linalg.norm(reference, axis=1)
    expected = (reference * np.minimum(1.0, CLIP / norms)[:, None]).sum(0)
    chunk = 2 if strategy == "chunked" else None
    fn = clipped_grad_sum(net_loss(net, copies=COPIES), CLIP, strategy=strategy, chunk_size=chunk)
    summed, got_norms = jax.jit(fn)(params, state, x, y)
    np.testing.assert_allclose(got_norms, norms, rtol=2e-5)
    np.testing.assert_allclose(flat(summed), expected, rtol=2e-4, atol=2e-6)
    assert (norms > CLIP).any(), "the test must clip some examples"


def test_per_example_grads_and_norms_einsum(case):
    net, params, state, x, y, reference = case
    loss = net_loss(net, copies=COPIES)
    grads = jax.jit(per_example_grads(loss, strategy="einsum"))(params, state, x, y)
    stacked = np.stack([flat(jax.tree.map(lambda leaf, i=i: leaf[i], grads)) for i in range(NUM)])
    np.testing.assert_allclose(stacked, reference, rtol=2e-4, atol=2e-6)
    norms, _ = jax.jit(per_example_grad_norms(loss, strategy="einsum"))(params, state, x, y)
    np.testing.assert_allclose(norms, np.linalg.norm(reference, axis=1), rtol=2e-5)


def test_norm_of_the_average_is_not_the_average_of_norms():
    """The cross terms matter: K copies' gradients point in different directions."""
    net, params, state, x, y = setup("conv")
    averaged, _ = jax.jit(per_example_grad_norms(net_loss(net, copies=COPIES)))(params, state, x, y)
    singles, _ = jax.jit(per_example_grad_norms(net_loss(net)))(
        params, state, x.reshape(NUM * COPIES, *SHAPE), jnp.repeat(y, COPIES)
    )
    assert np.all(np.asarray(averaged) < np.asarray(singles).reshape(NUM, COPIES).mean(1) - 1e-4)


def test_copies_must_match_the_data():
    net, params, state, x, y = setup("conv")
    with pytest.raises(ValueError, match=r"copies=3 needs x shaped \(N, 3, H, W, C\)"):
        per_example_grads(net_loss(net, copies=3), strategy="vmap")(params, state, x, y)
    with pytest.raises(ValueError, match="positive int"):
        net_loss(net, copies=0)
