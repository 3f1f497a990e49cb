"""`jc.interop.from_torchvision` against torchvision itself.

For every supported architecture a randomly initialised torchvision model, with
random BatchNorm statistics and affine parameters (else BatchNorm is nearly the
identity and the test weak), is ported; jaxconv's logits in evaluation mode
must equal torchvision's to a relative error (max |difference| / max |logit|)
below 1e-4, float32 on CPU, a batch of 2 at the native resolution. The deeper or
wider siblings of those (`DEEPER`: ResNet-152 beside ResNet-18/34/50/101, VGG-19 beside
VGG-11/13/16, ...) are built by the same code with other depths and widths: each is ported and
its tree checked against the net's own, every tensor's shape included, without compiling its
forward pass (about 10 s each). The torchvision model is built once per architecture and freed
after use; only its state_dict, input and outputs are kept, for the two most recent architectures.
"""

import functools
import gc

import jax
import numpy as np
import pytest

ENABLE = "./scripts/setup --dev installs torch 2.14.1 + torchvision 0.29.1 to run these tests"
torch = pytest.importorskip("torch", reason=f"torch is not installed; {ENABLE}")
torchvision = pytest.importorskip("torchvision", reason=f"torchvision is not installed; {ENABLE}")

from jaxconv import interop  # noqa: E402
from jaxconv.errors import StateDictError  # noqa: E402

TOLERANCE = 1e-4
AUX = {
    "googlenet": (("aux1", "inception4a"), ("aux2", "inception4d")),
    "inception_v3": (("AuxLogits", "Mixed_6e"),),
}
"""Architectures ported with ``aux_logits=True``: (auxiliary head, the module that feeds it)."""

DEEPER = {"vgg19", "vgg19_bn", "resnet152", "wide_resnet101_2", "resnext101_32x8d", "resnext101_64x4d"}
DEEPER |= {"densenet161", "densenet201"}
"""Compared by structure only: a sibling of the same family has its logits compared."""
# the two that the later tests (round trips, errors) reuse come last
ARCHITECTURES = sorted(
    set(interop.names()) - DEEPER, key=lambda name: (name in ("googlenet", "resnet18"), name)
)


def randomize_batch_norms(model, generator) -> None:
    """Random running statistics, scales and shifts, so that BatchNorm is far from the identity."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)


@functools.lru_cache(maxsize=2)
def reference(name: str) -> tuple[dict, np.ndarray, tuple[np.ndarray, ...]]:
    """torchvision's ``name``: its state_dict, an NHWC input and its outputs (logits, *aux logits)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    options = {"aux_logits": True, "init_weights": True} if name in AUX else {}
    model = getattr(torchvision.models, name)(weights=None, **options).eval()
    randomize_batch_norms(model, generator)
    size = 299 if name == "inception_v3" else 224
    images = torch.randn(2, 3, size, size, generator=generator)
    taps = {}  # in evaluation mode torchvision skips the auxiliary heads: run them on their inputs
    for _, tap in AUX.get(name, ()):
        getattr(model, tap).register_forward_hook(lambda module, i, out, tap=tap: taps.__setitem__(tap, out))
    with torch.inference_mode():
        outputs = [model(images)]
        outputs += [getattr(model, head)(taps[tap]) for head, tap in AUX.get(name, ())]
    state_dict = {key: tensor.clone() for key, tensor in model.state_dict().items()}
    del model
    gc.collect()
    return state_dict, images.numpy().transpose(0, 2, 3, 1), tuple(output.numpy() for output in outputs)


def port_options(name: str) -> dict:
    return {"aux_logits": True} if name in AUX else {}


def port_with_the_nets_structure(name: str, state_dict: dict, shape: tuple) -> tuple:
    """The port of ``state_dict`` (params, state) and jaxconv's net, after checking that the port has
    the tree, shapes and dtypes of the net's own initialisation."""
    params, state = interop.from_torchvision(name, state_dict, **port_options(name))
    net = interop.model(name, **port_options(name))
    _, init_params, init_state = jax.eval_shape(lambda: net.init(jax.random.key(0), shape))
    for ported, initial in ((params, init_params), (state, init_state)):
        assert jax.tree.structure(ported) == jax.tree.structure(initial)
        assert jax.tree.map(lambda a: (a.shape, a.dtype), ported) == jax.tree.map(
            lambda a: (a.shape, a.dtype), initial
        )
    return params, state, net


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_logits_equal_torchvisions(name):
    state_dict, images, expected = reference(name)
    params, state, net = port_with_the_nets_structure(name, state_dict, images.shape)
    with jax.default_matmul_precision("highest"):
        outputs = jax.jit(lambda p, s, x: net.apply(p, s, x, train=False)[0])(params, state, images)
    del params, state
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected, strict=True):
        error = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
        print(f"{name}: relative error {error:.2e}")
        assert error < TOLERANCE, f"{name}: relative error {error:.2e}"


def test_names_are_torchvisions():
    expected = {"alexnet", "googlenet", "inception_v3", "mobilenet_v2", "squeezenet1_0", "squeezenet1_1"}
    expected |= {f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn")}
    expected |= {f"resnet{depth}" for depth in (18, 34, 50, 101, 152)}
    expected |= {
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "wide_resnet50_2",
        "wide_resnet101_2",
    }
    expected |= {f"densenet{depth}" for depth in (121, 161, 169, 201)}
    assert interop.names() == sorted(expected)
    assert expected <= set(torchvision.models.list_models(module=torchvision.models))


# --- files -------------------------------------------------------------------------------------


def assert_same_trees(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_safetensors_file_round_trip(tmp_path):
    from safetensors.torch import save_file

    state_dict = reference("resnet18")[0]
    path = tmp_path / "resnet18.safetensors"
    save_file(state_dict, path)  # safetensors sorts the names: order must not matter
    assert_same_trees(
        interop.from_torchvision("resnet18", path), interop.from_torchvision("resnet18", state_dict)
    )


def test_weights_only_pth_round_trip(tmp_path):
    state_dict = reference("resnet18")[0]
    path = tmp_path / "resnet18.pth"
    torch.save(state_dict, path)
    assert_same_trees(
        interop.from_torchvision("resnet18", str(path)), interop.from_torchvision("resnet18", state_dict)
    )


def test_numpy_arrays_load():
    state_dict = reference("resnet18")[0]
    arrays = {key: tensor.numpy() for key, tensor in reversed(state_dict.items())}
    assert_same_trees(
        interop.from_torchvision("resnet18", arrays), interop.from_torchvision("resnet18", state_dict)
    )


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"fc.weight": torch.zeros(1), "why": object()}, path)
    with pytest.raises(Exception, match=r"[Ww]eights only load failed"):
        interop.from_torchvision("resnet18", path)


def test_unknown_file_kind():
    with pytest.raises(ValueError, match=r"cannot read 'weights.h5'.*\.safetensors"):
        interop.from_torchvision("resnet18", "weights.h5")


# --- errors ------------------------------------------------------------------------------------


def test_missing_tensor():
    state_dict = dict(reference("resnet18")[0])
    del state_dict["layer1.0.bn1.running_var"]
    with pytest.raises(
        StateDictError,
        match=r"missing: 'layer1.0.bn1.running_var' of shape \(64,\), for stage1/block0/body/conv1/norm/var",
    ):
        interop.from_torchvision("resnet18", state_dict)


def test_unexpected_tensor():
    state_dict = {**reference("resnet18")[0], "fc.extra": torch.zeros(3)}
    with pytest.raises(
        StateDictError, match=r"unexpected: 'fc.extra' of shape \(3,\)\nfix: pass the state_dict"
    ):
        interop.from_torchvision("resnet18", state_dict)


def test_misshapen_tensor():
    state_dict = {**reference("resnet18")[0], "conv1.weight": torch.zeros(64, 3, 5, 5)}
    with pytest.raises(
        StateDictError, match=r"misshapen: 'conv1.weight' has shape \(64, 3, 5, 5\), expected \(64, 3, 7, 7\)"
    ):
        interop.from_torchvision("resnet18", state_dict)


def test_wrong_num_classes_says_so():
    with pytest.raises(
        StateDictError, match=r"'fc.weight' has shape \(1000, 512\), expected \(10, 512\)(.|\n)*num_classes"
    ):
        interop.from_torchvision("resnet18", reference("resnet18")[0], num_classes=10)


def test_aux_classifiers_need_aux_logits():
    state_dict = reference("googlenet")[0]
    with pytest.raises(StateDictError, match=r"unexpected: 'aux1\.(.|\n)*pass aux_logits=True"):
        interop.from_torchvision("googlenet", state_dict)
    without_aux = {key: value for key, value in state_dict.items() if not key.startswith("aux")}
    with pytest.raises(StateDictError, match=r"missing: 'aux1\.(.|\n)*pass aux_logits=False"):
        interop.from_torchvision("googlenet", without_aux, aux_logits=True)
    params, _ = interop.from_torchvision("googlenet", without_aux)
    assert "aux1" not in params


def test_architecture_options_must_match():
    with pytest.raises(ValueError, match=r"norm=None.*with the architecture options at their defaults"):
        interop.from_torchvision("resnet18", {}, norm=None)


def test_unknown_name():
    with pytest.raises(ValueError, match=r"no torchvision model 'resnet51'; did you mean \['resnet50'"):
        interop.from_torchvision("resnet51", {})


@pytest.mark.parametrize("name", sorted(DEEPER))
def test_deeper_siblings_port_to_the_nets_structure(name):
    state_dict = getattr(torchvision.models, name)(weights=None).state_dict()
    port_with_the_nets_structure(name, state_dict, (2, 224, 224, 3))
