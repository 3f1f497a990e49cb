"""`Scattering` is Kymatio's scattering transform in jaxconv's layout: its features equal Kymatio's
NumPy frontend in float64 (another backend: NumPy's FFT, not JAX's), channel by channel."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxconv as jc
from jaxconv.errors import ShapeError
from jaxconv.layers.scattering import coefficients


def numpy_scattering(images: np.ndarray, scales: int, angles: int, max_order: int) -> np.ndarray:
    """Kymatio's NumPy frontend on (N, H, W, C) images: (N, C, K, H', W')."""
    from kymatio.scattering2d.frontend.numpy_frontend import ScatteringNumPy2D

    transform = ScatteringNumPy2D(J=scales, shape=images.shape[1:3], L=angles, max_order=max_order)
    return transform(np.moveaxis(images, -1, 1).astype(np.float64))


@pytest.mark.parametrize(("scales", "angles", "max_order"), [(2, 8, 2), (1, 4, 1), (2, 6, 1)])
def test_features_equal_kymatios_numpy_frontend(scales, angles, max_order):
    images = np.asarray(jax.random.uniform(jax.random.key(0), (3, 16, 12, 2)))
    net = jc.Scattering(scales=scales, angles=angles, max_order=max_order)
    shape, params, state = net.init(None, (-1, 16, 12, 2))
    features, _ = jax.jit(net.apply)(params, state, images)
    reference = numpy_scattering(images, scales, angles, max_order)  # (N, C, K, H', W')
    per_channel = reference.shape[2]
    assert per_channel == coefficients(scales, angles, max_order)
    assert shape == (-1, 16 >> scales, 12 >> scales, 2 * per_channel) == (-1, *features.shape[1:])
    for channel in range(2):  # channel c's coefficients are consecutive
        block = features[..., channel * per_channel : (channel + 1) * per_channel]
        np.testing.assert_allclose(block, np.moveaxis(reference[:, channel], 1, -1), atol=2e-6)


def test_the_low_pass_of_a_constant_image_is_the_constant():
    net = jc.Scattering(scales=2, angles=8)
    _, params, state = net.init(None, (-1, 28, 28, 1))
    features, _ = net.apply(params, state, np.full((1, 28, 28, 1), 0.5, np.float32))
    np.testing.assert_allclose(features[..., 0], 0.5, rtol=1e-4)  # the Gaussian sums to 1
    np.testing.assert_allclose(features[..., 1:], 0, atol=1e-5)  # wavelets have zero mean


def test_sizes_that_are_not_multiples_of_the_subsampling_are_refused():
    with pytest.raises(ShapeError, match=r"Scattering\(scales=2\) on 30x28.*2\*\*scales = 4"):
        jc.Scattering(scales=2).init(None, (-1, 30, 28, 1))
    with pytest.raises(ValueError, match=r"max_order=3.*1 or 2"):
        jc.Scattering(max_order=3)
    with pytest.raises(ValueError, match="Scattering"):
        jc.Scattering(scales=0)


def test_scatternet_linear_has_tramer_and_bonehs_shapes():
    shape, params, _ = jc.models.get("scatternet_linear").init(jax.random.key(0), (-1, 28, 28, 1))
    assert shape == (-1, 10)
    assert params["groupnorm_1"]["scale"].shape == (81,)  # 1 + 2 * 8 + 8**2 paths on the GroupNorm
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == 81 * 7 * 7 * 10 + 10 + 2 * 81
