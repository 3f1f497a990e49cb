"""Saliency, Grad-CAM (and Grad-CAM++) and occlusion against Captum and the ``grad-cam`` package
on torchvision's ResNet-18 and VGG-11, with the same (random) weights imported into jaxconv by
`jc.interop.from_torchvision`; and Adebayo et al.'s (2018) sanity check: the maps change when the
weights are re-initialised."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

import jaxconv as jc
from jaxconv import interop
from jaxconv.errors import LayerPathError, ShapeError
from jaxconv.inspect import grad_cam, layer_paths, occlusion, saliency

ENABLE = "./scripts/setup --dev installs torch, torchvision, captum and grad-cam to run these tests"
torch = pytest.importorskip("torch", reason=f"torch is not installed; {ENABLE}")
torchvision = pytest.importorskip("torchvision", reason=f"torchvision is not installed; {ENABLE}")
captum_attr = pytest.importorskip("captum.attr", reason=f"captum is not installed; {ENABLE}")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam", reason=f"grad-cam is not installed; {ENABLE}")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

TARGETS = [3, 7]
# the last block's output in each: torchvision's layer4[-1] (after its ReLU) and features[19] (ReLU)
MODELS = {
    "resnet18": ("stage4/relu_3", lambda tv: tv.layer4[-1]),
    "vgg11": ("stage5/conv2", lambda tv: tv.features[19]),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request):
    """(name, torchvision model, jaxconv net, params, state, x NCHW, x NHWC) on a batch of two 64x64
    images, ten classes, random BatchNorm statistics so that BatchNorm is not the identity."""
    name = request.param
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    params, state = interop.from_torchvision(name, model.state_dict(), num_classes=10)
    net = interop.model(name, num_classes=10)
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    yield name, model, net, params, state, x, jnp.asarray(x.transpose(0, 2, 3, 1))


def relative_error(got, expected) -> float:
    return float(np.abs(np.asarray(got) - expected).max() / np.abs(expected).max())


def test_saliency_equals_captum(pair):
    _, model, net, params, state, x, x_nhwc = pair
    expected = captum_attr.Saliency(model).attribute(
        torch.tensor(x, requires_grad=True), target=torch.tensor(TARGETS)
    )
    got = saliency(net, params, state, x_nhwc, target=jnp.array(TARGETS))
    assert relative_error(got, expected.numpy().transpose(0, 2, 3, 1)) < 1e-4


def test_occlusion_equals_captum(pair):
    _, model, net, params, state, x, x_nhwc = pair
    expected = captum_attr.Occlusion(model).attribute(
        torch.tensor(x), sliding_window_shapes=(3, 24, 24), strides=(3, 20, 20), target=torch.tensor(TARGETS)
    )  # 3 x 3 windows, overlapping by 4 pixels
    got = occlusion(net, params, state, x_nhwc, window=24, stride=20, target=jnp.array(TARGETS))
    assert relative_error(got, expected.numpy()[:, 0]) < 1e-4  # Captum repeats the map per channel


@pytest.mark.parametrize("plus_plus", [False, True], ids=["GradCAM", "GradCAMPlusPlus"])
def test_grad_cam_equals_the_grad_cam_package(pair, plus_plus):
    name, model, net, params, state, x, x_nhwc = pair
    layer, module = MODELS[name]
    method = pytorch_grad_cam.GradCAMPlusPlus if plus_plus else pytorch_grad_cam.GradCAM
    with method(model=model, target_layers=[module(model)]) as cam:
        expected = cam(input_tensor=torch.tensor(x), targets=[ClassifierOutputTarget(t) for t in TARGETS])
    got = grad_cam(net, params, state, x_nhwc, layer=layer, target=jnp.array(TARGETS), plus_plus=plus_plus)
    assert got.shape == (2, 64, 64)
    assert relative_error(got, expected) < 1e-4


def test_the_maps_change_when_the_weights_are_re_initialised(pair):
    """Adebayo et al. (2018), the model-randomisation test: maps of the same images, for the
    predicted class, under the imported weights and under a fresh initialisation have a rank
    correlation below 0.5 (ResNet-18 only, to keep the test cheap)."""
    name, _, net, params, state, _, x_nhwc = pair
    if name != "resnet18":
        pytest.skip("run on ResNet-18 only")
    torch.manual_seed(1)  # torchvision's initialisation again, other draws (and the same compiled maps)
    fresh_params, fresh_state = interop.from_torchvision(
        name, torchvision.models.resnet18(num_classes=10).state_dict(), num_classes=10
    )
    for explain in (
        lambda p, s: saliency(net, p, s, x_nhwc).max(axis=-1),
        lambda p, s: grad_cam(net, p, s, x_nhwc, layer=MODELS[name][0]),
    ):
        imported, fresh = np.asarray(explain(params, state)), np.asarray(explain(fresh_params, fresh_state))
        for a, b in zip(imported, fresh, strict=True):
            assert spearmanr(a.ravel(), a.ravel()).statistic > 0.99  # the measure itself can pass
            assert abs(spearmanr(a.ravel(), b.ravel()).statistic) < 0.5


def test_smoothgrad_averages_noisy_saliency():
    net = jc.serial(jc.Conv(3, 3, padding=1), jc.Relu, jc.Flatten, jc.Dense(4))
    params, state = random_params(net, (-1, 6, 6, 2))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 6, 2)), jnp.float32)
    smooth = saliency(net, params, state, x, target=3, samples=4, key=jax.random.key(2))
    spread = 0.15 * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None]
    by_hand = []
    for key in jax.random.split(jax.random.key(2), 4):
        noisy = x + spread * jax.random.normal(key, x.shape)
        by_hand.append(np.abs(jax.grad(lambda x: net.apply(params, state, x)[0][:, 3].sum())(noisy)))
    np.testing.assert_allclose(smooth, np.mean(by_hand, axis=0), rtol=1e-4, atol=1e-7)
    assert not np.allclose(smooth, saliency(net, params, state, x, target=3), rtol=1e-2)


def test_bad_layers_and_windows_are_clear_errors(pair):
    _, _, net, params, state, _, x_nhwc = pair
    with pytest.raises(LayerPathError, match="no layer at 'stage9'"):
        grad_cam(net, params, state, x_nhwc, layer="stage9")
    with pytest.raises(LayerPathError, match=r"outputs shape \(2, 10\), not a map"):
        grad_cam(net, params, state, x_nhwc, layer=layer_paths(net)[-1])  # the classifier
    with pytest.raises(ShapeError, match="window"):
        occlusion(net, params, state, x_nhwc, window=65)
