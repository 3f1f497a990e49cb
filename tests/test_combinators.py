"""The protocol and the combinators: params, state and keys reach every child."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv as jc
from jaxconv import core


def test_the_design_example_runs(key):
    net = jc.serial(
        jc.Conv(32, 3, padding=1), jc.Relu, jc.MaxPool(2),
        jc.Conv(64, 3, padding=1), jc.Relu, jc.MaxPool(2),
        jc.Flatten, jc.Dense(128), jc.Relu, jc.Dense(10),
    )  # fmt: skip
    out_shape, params, state = net.init(key, (-1, 28, 28, 1))
    x = jnp.ones((3, 28, 28, 1))
    logits, new_state = net.apply(params, state, x, key=key, train=True)
    assert out_shape == (-1, 10) and logits.shape == (3, 10)
    assert state == {} and new_state == {}
    assert sorted(params) == ["conv_0", "conv_3", "dense_7", "dense_9"]
    assert params["conv_3"]["kernel"].shape == (3, 3, 32, 64)  # HWIO
    assert params["dense_7"]["kernel"].shape == (7 * 7 * 64, 128)
    init, apply = net  # unpacks like stax
    assert init is net.init and apply is net.apply


def test_none_batch_means_any(key):
    assert jc.Conv(3, 3).init(key, (None, 8, 8, 1))[0] == (-1, 6, 6, 3)


def test_serial_keys_use_chosen_names_and_leave_out_empty_entries(key):
    net = jc.serial(
        jc.named("stem", jc.Conv(4, 3)), jc.Relu, jc.named("head", jc.serial(jc.Flatten, jc.Dense(2)))
    )
    _, params, state = net.init(key, (-1, 5, 5, 1))
    assert jax.tree.map(jnp.shape, params) == {
        "stem": {"kernel": (3, 3, 1, 4), "bias": (4,)},
        "head": {"dense_1": {"kernel": (36, 2), "bias": (2,)}},
    }
    assert state == {}
    with pytest.raises(ValueError, match=r"two layers are named \['a'\]"):
        jc.serial(jc.named("a", jc.Relu), jc.named("a", jc.Tanh))
    with pytest.raises(ValueError, match="non-empty string"):
        jc.named("", jc.Relu)


def test_each_child_gets_its_own_key(key):
    net = jc.serial(jc.Dropout(0.5), jc.Dropout(0.5))
    x = jnp.ones((1, 1000))
    _, params, state = net.init(key, x.shape)
    y, _ = net.apply(params, state, x, key=key, train=True)
    first, _ = jc.Dropout(0.5).apply({}, {}, x, key=jax.random.split(key)[0], train=True)
    # the second dropout used a different key: survivors of both are a strict subset
    assert 0 < int((y > 0).sum()) < int((first > 0).sum())
    branches = jc.serial(jc.fan_out(2), jc.parallel(jc.Dropout(0.5), jc.Dropout(0.5)))
    a, b = branches.apply({}, {}, x, key=key, train=True)[0]
    assert not np.array_equal(a, b)


def test_missing_keys_say_how_to_call(key):
    net = jc.serial(jc.Conv(2, 1), jc.Dropout(0.5))
    _, params, state = net.init(key, (-1, 3, 3, 1))
    with pytest.raises(jc.MissingKeyError, match=r"key=jax\.random\.key\(seed\), train=True") as error:
        net.apply(params, state, jnp.ones((1, 3, 3, 1)), train=True)
    assert "in dropout_1 (Dropout)" in error.value.__notes__
    net.apply(params, state, jnp.ones((1, 3, 3, 1)))  # evaluation needs no key
    with pytest.raises(jc.MissingKeyError, match=r"net\.init\(jax\.random\.key\(0\), shape\)"):
        net.init(None, (-1, 3, 3, 1))


def test_errors_say_where_they_happened(key):
    net = jc.serial(jc.Conv(4, 3), jc.named("block", jc.serial(jc.Relu, jc.Conv(4, 5))))
    with pytest.raises(jc.SizeError, match="filter spans 5") as error:
        net.init(key, (-1, 6, 6, 1))
    assert error.value.__notes__ == [
        "in conv_1 (Conv) with input shape (-1, 4, 4, 4)",
        "in block (Serial) with input shape (-1, 4, 4, 4)",
    ]


def test_batch_norm_state_threads_through_combinators(key):
    net = jc.serial(jc.Conv(3, 1), jc.residual(jc.serial(jc.BatchNorm(momentum=0.5), jc.Relu)))
    _, params, state = net.init(key, (-1, 4, 4, 2))
    assert jax.tree.map(jnp.shape, state) == {
        "residual_1": {"body": {"batchnorm_0": {"mean": (3,), "var": (3,)}}}
    }
    x = jax.random.normal(key, (8, 4, 4, 2)) + 3.0
    _, new_state = net.apply(params, state, x, train=True)
    conv_out, _ = net.apply(params, state, x, train=False)  # sanity: evaluation runs
    features = jc.Conv(3, 1).apply(params["conv_0"], {}, x)[0]
    expected_mean = 0.5 * features.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(
        new_state["residual_1"]["body"]["batchnorm_0"]["mean"], expected_mean, rtol=1e-5
    )
    assert conv_out.shape == (*x.shape[:3], 3)


def test_residual_adds_and_checks_shapes(key):
    body = jc.Conv(2, 3, padding=1)
    net = jc.residual(body)
    _, params, _ = net.init(key, (-1, 5, 5, 2))
    x = jax.random.normal(key, (2, 5, 5, 2))
    y, _ = net.apply(params, {}, x)
    np.testing.assert_allclose(y, body.apply(params["body"], {}, x)[0] + x, rtol=1e-6)
    with pytest.raises(jc.ShapeError, match=r"give a projection shortcut, e\.g\. shortcut=Conv"):
        jc.residual(jc.Conv(4, 3, stride=2, padding=1)).init(key, (-1, 8, 8, 2))
    projected = jc.residual(jc.Conv(4, 3, stride=2, padding=1), shortcut=jc.Conv(4, 1, stride=2))
    assert projected.init(key, (-1, 8, 8, 2))[0] == (-1, 4, 4, 4)
    with pytest.raises(jc.ShapeError, match="make them agree"):
        jc.residual(jc.Conv(4, 3, stride=2, padding=1), shortcut=jc.Conv(4, 1)).init(key, (-1, 8, 8, 2))


def test_branches(key):
    inception = jc.serial(
        jc.fan_out(3),
        jc.parallel(jc.Conv(2, 1), jc.Conv(3, 3, padding=1), jc.MaxPool(3, stride=1, padding=1)),
        jc.fan_in_concat(),
    )
    out_shape, params, _ = inception.init(key, (-1, 6, 6, 4))
    assert out_shape == (-1, 6, 6, 2 + 3 + 4)
    x = jax.random.normal(key, (2, 6, 6, 4))
    y, _ = inception.apply(params, {}, x)
    np.testing.assert_array_equal(y[..., 5:], jc.MaxPool(3, stride=1, padding=1).apply({}, {}, x)[0])
    summed, _ = jc.serial(jc.fan_out(2), jc.fan_in_sum).apply({}, {}, x)
    np.testing.assert_allclose(summed, 2 * x)


def test_branch_errors(key):
    with pytest.raises(jc.ShapeError, match=r"only the concatenated axis may differ"):
        jc.serial(jc.fan_out(2), jc.parallel(jc.Conv(2, 1), jc.Conv(2, 3)), jc.fan_in_concat()).init(
            key, (-1, 6, 6, 1)
        )
    with pytest.raises(jc.ShapeError, match=r"must be equal to add"):
        jc.serial(jc.fan_out(2), jc.parallel(jc.Conv(2, 1), jc.Conv(3, 1)), jc.fan_in_sum).init(
            key, (-1, 6, 6, 1)
        )
    with pytest.raises(jc.ShapeError, match=r"put fan_out\(n\) before the branches"):
        jc.fan_in_sum.init(key, (-1, 6, 6, 1))
    with pytest.raises(jc.ShapeError, match="a tuple of 2 shapes"):
        jc.parallel(jc.Relu, jc.Relu).init(key, ((-1, 3),) * 3)
    with pytest.raises(ValueError, match="would concatenate batches"):
        jc.fan_in_concat(axis=0).init(key, ((-1, 3), (-1, 3)))
    with pytest.raises(ValueError, match="at least 1"):
        jc.fan_out(0)
    with pytest.raises(ValueError, match="at least one layer"):
        jc.serial()


def test_lambda_and_shape_dependent(key):
    net = jc.serial(jc.Lambda(lambda x: x[:, ::2, ::2]), jc.shape_dependent(lambda s: jc.Conv(2 * s[-1], 1)))
    out_shape, params, _ = net.init(key, (-1, 8, 8, 3))
    assert out_shape == (-1, 4, 4, 6)
    y, _ = net.apply(params, {}, jnp.ones((2, 8, 8, 3)))
    assert y.shape == (2, 4, 4, 6)


def test_info_describes_layers():
    conv = jc.Conv(8, 3, stride=2)
    assert jc.info(conv).kind == "Conv"
    assert jc.info(conv).spec["stride"] == 2 and jc.info(conv).spec["features"] == 8
    net = jc.serial(conv, jc.Relu)
    assert [name for name, _ in jc.info(net).children] == ["conv_0", "relu_1"]
    assert jc.info(jc.Layer(lambda k, s: (s, {}, {}), lambda p, s, x, **kw: (x, {}))).kind == "Layer"


def test_trace_init_records_every_layer(key):
    net = jc.serial(jc.Conv(4, 3), jc.named("block", jc.serial(jc.Relu, jc.MaxPool(2))))
    (out_shape, _, _), records = core.trace_init(net, key, (-1, 10, 10, 1))
    assert out_shape == (-1, 4, 4, 4)
    seen = [(r.path, r.info.kind, r.output_shape) for r in records]
    assert seen == [
        (("conv_0",), "Conv", (-1, 8, 8, 4)),
        (("block", "relu_0"), "Relu", (-1, 8, 8, 4)),
        (("block", "maxpool_1"), "MaxPool", (-1, 4, 4, 4)),
        (("block",), "Serial", (-1, 4, 4, 4)),
        ((), "Serial", (-1, 4, 4, 4)),
    ]


def test_bad_shapes_are_named(key):
    with pytest.raises(ValueError, match="is not a shape"):
        jc.Relu.init(key, (-1, 2.5))
    with pytest.raises(ValueError, match="is not a shape"):
        jc.Relu.init(key, 28)


def test_hand_written_layers_compose(key):
    def init(key, shape):
        return shape, {"w": jnp.ones(())}, {}

    def apply(params, state, x, *, key=None, train=False):
        return x * params["w"], {}

    net = jc.serial(jc.Layer(init, apply), jc.Relu)
    _, params, _ = net.init(key, (-1, 3))
    assert params == {"layer_0": {"w": 1.0}}


def test_wired_threads_a_graph_at_init_and_apply(key):
    stem, head, side = jc.Conv(4, 3, padding=1), jc.Conv(2, 1), jc.serial(jc.Flatten, jc.Dense(3))

    def run(step, x):  # the stem feeds both the head and a side classifier
        features = step("stem", stem, x)
        return step("head", head, features), step("side", side, features)

    net = jc.wired("TwoHeads", [("stem", stem), ("head", head), ("side", side)], run)
    out_shape, params, _ = net.init(key, (-1, 5, 5, 1))
    assert out_shape == ((-1, 5, 5, 2), (-1, 3))
    assert sorted(params) == ["head", "side", "stem"]
    x = jax.random.normal(key, (2, 5, 5, 1))
    (y, z), _ = net.apply(params, {}, x)
    features = stem.apply(params["stem"], {}, x)[0]
    np.testing.assert_allclose(y, head.apply(params["head"], {}, features)[0], rtol=1e-6)
    np.testing.assert_allclose(z, side.apply(params["side"], {}, features)[0], rtol=1e-6)
    assert [name for name, _ in jc.info(net).children] == ["stem", "head", "side"]


def test_shape_dependent_sees_any_batch_at_init_and_apply(key):
    seen = []

    def make(shape):
        seen.append(shape)
        return jc.Conv(shape[-1] // 2, 1)

    net = jc.shape_dependent(make)
    _, params, state = net.init(key, (8, 4, 4, 6))
    net.apply(params, state, jnp.ones((8, 4, 4, 6)))
    assert seen == [(-1, 4, 4, 6), (-1, 4, 4, 6)]


def test_lambda_takes_several_inputs(key):
    net = jc.serial(jc.fan_out(2), jc.Lambda(lambda xs: xs[0] * xs[1]))
    assert net.init(key, (-1, 4))[0] == (-1, 4)
    np.testing.assert_array_equal(net.apply({}, {}, jnp.full((2, 4), 3.0))[0], jnp.full((2, 4), 9.0))


def test_numpy_integers_are_sizes(key):
    shape = (np.int64(-1), *np.array([5, 5, 1]))
    assert jc.Conv(2, 3, padding=np.int64(1)).init(key, shape)[0] == (-1, 5, 5, 2)


def test_a_constructor_where_a_layer_belongs_is_named():
    with pytest.raises(
        jc.LayerTypeError, match=r"serial: child 1 is the constructor Elu, not a layer: write Elu\(\.\.\.\)"
    ):
        jc.serial(jc.Conv(4, 3), jc.Elu)
    with pytest.raises(jc.LayerTypeError, match=r"parallel: child 0 is the constructor Conv"):
        jc.parallel(jc.Conv, jc.Relu)
    with pytest.raises(jc.LayerTypeError, match=r"residual: body is the constructor BatchNorm"):
        jc.residual(jc.BatchNorm)
    with pytest.raises(jc.LayerTypeError, match=r"Skip: child 'a' is 3 \(int\), not a layer"):
        jc.wired("Skip", [("a", 3)], lambda step, x: x)


def test_calling_a_layer_says_it_is_one_already():
    with pytest.raises(
        jc.LayerTypeError, match=r"Relu is already a layer, not a constructor: write Relu, not Relu\(\)"
    ):
        jc.serial(jc.Relu())
    with pytest.raises(TypeError):  # also a TypeError, as Python would raise
        jc.Flatten()
    with pytest.raises(
        jc.LayerTypeError, match=r"a Conv layer is not called on data: run it with layer\.apply"
    ):
        jc.Conv(8, 3)(jnp.ones((1, 8, 8, 1)))


def test_a_plain_function_where_a_layer_belongs_points_to_lambda():
    with pytest.raises(
        jc.LayerTypeError,
        match=r"serial: child 1 is the function <lambda>, not a layer: wrap it as jc\.Lambda\(fn\)",
    ):
        jc.serial(jc.Conv(4, 3), lambda x: x)
