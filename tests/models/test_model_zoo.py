"""The registry, output shapes at native resolution, and small real forward passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxconv as jc
from jaxconv import models
from jaxconv.core import trace_init

SLOW = {"resnet1202", "preact_resnet1001", "densenet_bc250_24", "densenet_bc190_40"}
# one architecture per family and variant kind, traced in the default suite; all of them under -m slow
REPRESENTATIVE = [
    "lenet5", "alexnet", "alexnet_tv", "zfnet", "vgg11_lrn", "vgg16_c_bn", "nin", "nin_cifar", "all_cnn_c",
    "googlenet", "googlenet_tv", "inception_v3", "resnet50", "preact_resnet18", "resnet20", "resnet110_sd",
    "wrn16_8", "resnext50_32x4d", "densenet121", "densenet_bc100_12", "squeezenet1_0", "squeezenet1_1",
    "mobilenet_v2",
]  # fmt: skip


def output_shape(name, **options):
    """The logits' shape(s) of ``name`` on 2 native inputs, traced with `jax.eval_shape`."""
    net, shape = models.get(name, **options), models.input_shape(name, batch=2)

    def forward(key, x):
        _, params, state = net.init(key, shape)
        return net.apply(params, state, x, key=key, train=True)[0]

    out = jax.eval_shape(forward, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
    return jax.tree.map(lambda leaf: leaf.shape, out)


def test_names_lists_every_family():
    names = models.names()
    assert names == sorted(names)
    for name in [
        "lenet5",
        "alexnet",
        "alexnet_tv",
        "zfnet",
        "vgg11",
        "vgg11_lrn",
        "vgg16_c",
        "vgg19_bn",
        "nin",
    ]:
        assert name in names
    for name in ["googlenet", "googlenet_tv", "inception_v3", "resnet152", "resnet50_tv", "preact_resnet50"]:
        assert name in names
    for name in ["resnet20", "resnet110", "resnet110_sd", "wrn28_10", "wide_resnet101_2", "resnext101_64x4d"]:
        assert name in names
    for name in ["densenet264", "densenet_bc100_12", "squeezenet1_1", "mobilenet_v2", "all_cnn_c"]:
        assert name in names


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_native_output_shape(name):
    assert output_shape(name) == (2, models.spec(name).num_classes)


@pytest.mark.slow
@pytest.mark.parametrize("name", models.names())
def test_every_model_runs_under_eval_shape(name):
    assert output_shape(name) == (2, models.spec(name).num_classes)


def test_auxiliary_heads_give_a_tuple():
    assert output_shape("googlenet", aux_logits=True, num_classes=7) == ((2, 7),) * 3
    assert output_shape("inception_v3", aux_logits=True) == ((2, 1000),) * 2


def test_global_pooling_accepts_other_sizes():
    for name, input_shape in [("resnet18", (2, 64, 96, 3)), ("vgg16", (2, 64, 64, 3))]:
        net = models.get(name, num_classes=5)
        assert traced_output_shapes(net, input_shape)[()] == (2, 5)


def test_readable_parameter_names():
    _, params, state = jax.eval_shape(
        lambda k: models.get("resnet50").init(k, (1, 224, 224, 3)), jax.random.key(0)
    )
    assert params["stage1"]["block0"]["body"]["conv2"]["conv"]["kernel"].shape == (3, 3, 64, 64)
    assert params["stage2"]["block0"]["shortcut"]["conv"]["kernel"].shape == (1, 1, 256, 512)
    assert state["stage4"]["block2"]["body"]["conv3"]["norm"]["mean"].shape == (2048,)
    assert params["head"]["fc"]["kernel"].shape == (2048, 1000)


def traced_output_shapes(net, input_shape):
    """Each layer's output shape during init, by path, traced without allocating."""
    shapes = {}

    def run(key):
        result, records = trace_init(net, key, input_shape)
        shapes.update({record.path: record.output_shape for record in records})
        return result[1]

    jax.eval_shape(run, jax.random.key(0))
    return shapes


@pytest.mark.parametrize(("name", "conv1_size"), [("resnet50", 28), ("resnet50_tv", 56)])
def test_v1_strides_the_1x1_and_v1_5_the_3x3(name, conv1_size):
    shapes = traced_output_shapes(models.get(name), (1, 224, 224, 3))
    block = ("stage2", "block0", "body")
    assert shapes[(*block, "conv1")] == (1, conv1_size, conv1_size, 128)
    assert shapes[(*block, "conv2")] == (1, 28, 28, 128)


def test_unknown_name_lists_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown model 'resnet51'; did you mean .*'resnet50'.*valid names: .*vgg16"
    ):
        models.get("resnet51")


def test_unknown_option_lists_the_options():
    with pytest.raises(
        ValueError, match=r"model 'vgg16' takes no option\(s\) \['depth'\]; its options are .*batch_norm"
    ):
        models.get("vgg16", depth=3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: models.get("resnet20", norm="layer"), r"norm='layer' is not a normalisation"),
        (lambda: models.resnet.cifar_options(21), r"depth 6n \+ 2, got 21; try 20"),
        (lambda: models.densenet.cifar_options(101, 12), r"DenseNet-BC has depth 6n \+ 4, got 101; try 100"),
        (lambda: models.get("alexnet", groups=4), r"alexnet\(groups=4\): use 2"),
        (lambda: models.get("vgg16", config="F"), r"vgg\(config='F'\): choose one of"),
        (lambda: models.get("squeezenet1_0", version="2"), r"squeezenet\(version='2'\)"),
        (lambda: models.get("resnet50", stride_on="7x7"), r"stride_on='7x7'"),
        (lambda: models.get("resnet20", shortcut="C"), r"shortcut='C': use 'A'"),
        (lambda: models.get("lenet5", activation="gelu"), r"choose activation 'tanh' or 'relu'"),
    ],
)
def test_option_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call().init(jax.random.key(0), (1, 32, 32, 3))


def test_lenet5_matches_torch():
    net = models.get("lenet5")
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype(np.float32)
    _, params, state = net.init(jax.random.key(0), (-1, 32, 32, 1))
    logits, _ = jax.jit(lambda p, x: net.apply(p, state, x))(params, x)

    def conv(name, t):
        kernel = torch.tensor(np.asarray(params[name]["kernel"])).permute(3, 2, 0, 1)
        return torch.tanh(
            torch.nn.functional.conv2d(t, kernel, torch.tensor(np.asarray(params[name]["bias"])))
        )

    def dense(name, t):
        return t @ torch.tensor(np.asarray(params[name]["kernel"])) + torch.tensor(
            np.asarray(params[name]["bias"])
        )

    t = torch.tensor(x).permute(0, 3, 1, 2)
    t = torch.nn.functional.avg_pool2d(conv("c1", t), 2)
    t = torch.nn.functional.avg_pool2d(conv("c3", t), 2)
    t = torch.tanh(dense("f6", conv("c5", t).flatten(1)))
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(logits, dense("output", t).numpy(), rtol=1e-5, atol=1e-5)


def test_resnet20_forward_and_train_state():
    net = models.get("resnet20")
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 3)), jnp.float32)
    _, params, state = net.init(jax.random.key(0), (-1, 32, 32, 3))
    apply = jax.jit(net.apply, static_argnames="train")
    logits, same_state = apply(params, state, x)
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), same_state, state))
    _, new_state = net.apply(params, state, x, train=True)  # eager: one compile is enough
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert not np.allclose(new_state["stem"]["norm"]["mean"], state["stem"]["norm"]["mean"])


def test_zero_pad_shortcut_subsamples_and_pads():
    block = models.resnet._zero_pad_shortcut(8, 2)
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    y, _ = block.apply({}, {}, x)
    np.testing.assert_array_equal(y[..., :3], np.asarray(x)[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 3:], 0)


def test_group_norm_resnet_gives_per_example_gradients():
    net = models.get("resnet20", norm="group", depths=(1, 1, 1))  # a ResNet-8 keeps the compile short
    _, params, state = net.init(jax.random.key(0), (-1, 32, 32, 3))
    assert state == {}
    x = jnp.ones((2, 1, 32, 32, 3))

    def loss(p, example):
        logits, _ = net.apply(p, state, example, train=True)
        return jnp.sum(logits**2)

    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, x)
    assert grads["head"]["fc"]["kernel"].shape == (2, 64, 10)


def test_adaptive_avg_pool_matches_torch():
    x = np.random.default_rng(2).normal(size=(2, 7, 10, 3)).astype(np.float32)
    y, _ = jc.AdaptiveAvgPool((3, 4)).apply({}, {}, x)
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x).permute(0, 3, 1, 2), (3, 4))
    np.testing.assert_allclose(y, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [13, 14, 112, 55])
def test_ceil_max_pool_matches_torch(size):
    x = np.random.default_rng(size).normal(size=(1, size, size, 2)).astype(np.float32)
    pool = jc.MaxPool(3, 2, ceil_mode=True)
    out_shape, _, _ = pool.init(None, x.shape)
    y, _ = pool.apply({}, {}, x)
    expected = torch.nn.functional.max_pool2d(torch.tensor(x).permute(0, 3, 1, 2), 3, 2, ceil_mode=True)
    assert out_shape == y.shape
    np.testing.assert_array_equal(y, expected.permute(0, 2, 3, 1).numpy())
