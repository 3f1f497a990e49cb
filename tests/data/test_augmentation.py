import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv.data import augment, normalize, random_crop, random_flip

N, H, W, C, P = 200, 5, 6, 2, 2


def distinct_images(n=N, h=H, w=W, c=C):
    """(n, h, w, c) int32 with every value distinct and non-zero (zero is the padding)."""
    return np.arange(1, n * h * w * c + 1, dtype=np.int32).reshape(n, h, w, c)


def crops_of(image: np.ndarray, padding: int, flips=(False,)) -> list[np.ndarray]:
    """Every crop back to the image's size of the zero-padded image (NumPy reference)."""
    h, w, _ = image.shape
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    crops = []
    for i, j, flip in itertools.product(range(2 * padding + 1), range(2 * padding + 1), flips):
        crop = padded[i : i + h, j : j + w]
        crops.append(crop[:, ::-1] if flip else crop)
    return crops


def test_crop_is_the_numpy_slice_at_some_offset():
    images = distinct_images()
    out = np.asarray(random_crop(jax.random.key(0), images, P))
    assert out.shape == images.shape and out.dtype == np.int32
    offsets = []
    for image, crop in zip(images, out, strict=True):
        matches = [k for k, c in enumerate(crops_of(image, P)) if np.array_equal(c, crop)]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) >= 20  # of the 25 offsets: each example draws its own


def test_crop_literal():
    image = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3, 1)
    out = np.asarray(random_crop(jax.random.key(1), np.repeat(image, 100, axis=0), 1))[..., 0]
    top_left = np.array([[0, 0, 0], [0, 1, 2], [0, 4, 5]])  # offset (0, 0)
    bottom_right = np.array([[5, 6, 0], [8, 9, 0], [0, 0, 0]])  # offset (2, 2)
    centre = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])  # offset (1, 1)
    for expected in (top_left, bottom_right, centre):
        assert any(np.array_equal(o, expected) for o in out)


def test_crop_determinism_keys_and_jit():
    images = jnp.asarray(distinct_images())
    crop = jax.jit(random_crop, static_argnums=2)
    a, b = random_crop(jax.random.key(3), images, P), crop(jax.random.key(3), images, P)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, random_crop(jax.random.key(4), images, P))
    np.testing.assert_array_equal(random_crop(jax.random.PRNGKey(3), images, 0), images)


def test_crop_errors():
    with pytest.raises(ValueError, match="padding must be an int >= 0, got -1"):
        random_crop(jax.random.key(0), distinct_images(), -1)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, H, W, C\), got shape \(5, 6\)"):
        random_crop(jax.random.key(0), np.zeros((5, 6)), 1)


def test_flip_is_identity_or_mirror_with_half_probability():
    images = distinct_images()
    out = np.asarray(random_flip(jax.random.key(0), images))
    flipped = [np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images, strict=True)]
    kept = [np.array_equal(o, x) for o, x in zip(out, images, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 0.35 < np.mean(flipped) < 0.65


def test_flip_literal_and_probability():
    image = jnp.array([[[[1], [2], [3]], [[4], [5], [6]]]], jnp.uint8)  # (1, 2, 3, 1)
    out = random_flip(jax.random.key(0), image, probability=1.0)
    np.testing.assert_array_equal(out[0, ..., 0], [[3, 2, 1], [6, 5, 4]])
    np.testing.assert_array_equal(random_flip(jax.random.key(0), image, probability=0.0), image)
    images = jnp.asarray(distinct_images())
    a = jax.jit(random_flip)(jax.random.key(5), images)
    np.testing.assert_array_equal(a, random_flip(jax.random.key(5), images))
    assert not np.array_equal(a, random_flip(jax.random.key(6), images))


def test_normalize_literal():
    x = jnp.array([0, 51, 255], jnp.uint8).reshape(1, 1, 3, 1)
    out = normalize(x, 0.2, 0.5)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out.reshape(-1), [-0.4, 0.0, 1.6], atol=1e-6)
    rgb = jnp.array([255, 0, 51], jnp.uint8).reshape(1, 1, 1, 3)
    out = normalize(rgb, (0.5, 0.0, 0.2), (0.5, 1.0, 0.1))
    np.testing.assert_allclose(out.reshape(-1), [1.0, 0.0, 0.0], atol=1e-6)
    floats = jnp.full((1, 1, 1, 3), 0.5, jnp.float32)  # floats are taken to be in [0, 1]
    np.testing.assert_allclose(normalize(floats, 0.25, (0.5,)), 0.5)


def test_normalize_errors():
    with pytest.raises(ValueError, match=r"mean must be a scalar or have one value per channel "
                       r"\(3\), got shape \(2,\)"):  # fmt: skip
        normalize(jnp.zeros((1, 2, 2, 3), jnp.uint8), (0.1, 0.2), 1.0)
    with pytest.raises(TypeError, match="expected uint8 or floating-point images, got int32"):
        normalize(jnp.zeros((1, 2, 2, 3), jnp.int32), 0.0, 1.0)


def test_augment_is_a_normalized_flip_of_a_crop():
    images = np.arange(N * H * W * C).reshape(N, H, W, C).astype(np.uint8) + 1  # zero is padding
    mean, std = (0.4, 0.6), (0.2, 0.3)
    run = jax.jit(lambda key, x: augment(key, x, crop_padding=1, flip=True, mean=mean, std=std))
    out = run(jax.random.key(0), images)
    assert out.shape == (N, H, W, C) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, run(jax.random.key(0), images))
    assert not np.array_equal(out, run(jax.random.key(1), images))
    pixels = np.rint((np.asarray(out) * std + mean) * 255)
    for image, result in zip(images, pixels, strict=True):
        assert any(np.array_equal(c, result) for c in crops_of(image, 1, flips=(False, True)))
    plain = augment(jax.random.key(0), images, mean=mean, std=std)
    np.testing.assert_allclose(plain, (images / 255.0 - mean) / std, rtol=1e-5, atol=1e-6)
