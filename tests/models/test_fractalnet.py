"""FractalNet against its definition: depth, parameter count, a torch reference, drop-path."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxconv as jc
from jaxconv import models
from jaxconv.core import trace_init
from jaxconv.errors import MissingKeyError, ShapeError
from jaxconv.models.fractalnet import Join, fractal_block

WIDTHS = (64, 128, 256, 512, 512)


def longest_path(net) -> int:
    """Convs on the longest path, from the description: serial adds, branches take the max."""
    description = jc.info(net)
    if description.kind == "Conv":
        return 1
    depths = [longest_path(child) for _, child in description.children]
    return sum(depths) if description.kind == "Serial" else max(depths, default=0)


def conv_kinds(name):
    """The kind of every layer that init records, traced without allocating."""
    kinds = []

    def run(key):
        result, records = trace_init(models.get(name), key, models.input_shape(name, batch=1))
        kinds.extend(record.info.kind for record in records)
        return result[1]

    jax.eval_shape(run, jax.random.key(0))
    return kinds


@pytest.mark.parametrize(("name", "columns"), [("fractalnet20", 3), ("fractalnet40", 4)])
def test_depth_is_blocks_times_two_to_the_columns_minus_one(name, columns):
    assert longest_path(models.get(name)) == 5 * 2 ** (columns - 1) == int(name.removeprefix("fractalnet"))
    assert conv_kinds(name).count("Conv") == 5 * (2**columns - 1)  # every block has 2^C - 1 convs


def fractal_params(columns: int, widths, num_classes: int, norm: bool = True) -> int:
    """Count from the rule: f_C has C convs reading the block's input and 2^C - 1 - C the block's width."""
    total, c_in = 0, 3
    for width in widths:
        first, rest = columns, 2**columns - 1 - columns
        per_conv_extra = 2 * width if norm else width  # BN scale + bias, or the conv's bias
        total += 9 * width * (first * c_in + rest * width) + (first + rest) * per_conv_extra
        c_in = width
    return total + c_in * num_classes + num_classes


def test_fractal_params_formula_by_hand():
    # C = 1, one block: a single 3x3 conv 3 -> 4 with BN, then FC 4 -> 2
    assert fractal_params(1, (4,), 2) == 9 * 3 * 4 + 2 * 4 + 4 * 2 + 2
    # C = 2: conv(conv(z)) and conv(z): two convs read z, one reads the width
    assert fractal_params(2, (4,), 2) == 2 * (9 * 3 * 4 + 8) + (9 * 4 * 4 + 8) + 10


@pytest.mark.parametrize(
    ("name", "columns", "options", "classes"),
    [
        ("fractalnet20", 3, {}, 10),
        ("fractalnet40", 4, {}, 10),
        ("fractalnet40", 4, {"num_classes": 100}, 100),
        ("fractalnet20", 2, {"columns": 2, "norm": None}, 10),
    ],
)
def test_parameter_count_by_formula(count, name, columns, options, classes):
    norm = options.get("norm", "batch") is not None
    assert count(name, **options) == fractal_params(columns, WIDTHS, classes, norm)


def test_parameter_counts_literal(count):
    assert count("fractalnet20") == 33_724_618
    assert count("fractalnet40") == 76_106_634


@pytest.mark.parametrize("name", ["fractalnet20", "fractalnet40"])
def test_native_output_shape(name):
    net, shape = models.get(name), models.input_shape(name, batch=2)

    def forward(key, x):
        _, params, state = net.init(key, shape)
        return net.apply(params, state, x, key=key, train=True)[0]

    out = jax.eval_shape(forward, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("columns", [1, 2, 3])
def test_block_receptive_field_shows_the_longest_path(columns):
    """With positive weights every path is live: the field is 1 + 2 per conv on the longest path."""
    block = fractal_block(columns, 2, norm=None)
    size = 2 ** (columns + 1) + 3
    _, params, _ = block.init(jax.random.key(0), (1, size, size, 1))
    params = jax.tree.map(lambda leaf: jnp.abs(leaf) + 0.1, params)
    centre = size // 2

    def pixel(x):
        return block.apply(params, {}, x)[0][0, centre, centre, 0]

    seen = np.asarray(jax.grad(pixel)(jnp.ones((1, size, size, 1)))[0, :, :, 0] != 0)
    rows, cols = np.nonzero(seen)
    field = 1 + 2 * 2 ** (columns - 1)
    assert rows.max() - rows.min() + 1 == field and cols.max() - cols.min() + 1 == field


# --- an independent reference: the expansion rule, written out in torch -----------------------


def reference_unit(params, state, z):
    kernel = torch.tensor(np.asarray(params["conv"]["kernel"])).permute(3, 2, 0, 1)
    y = torch.nn.functional.conv2d(z, kernel, padding=1)
    mean, var = (torch.tensor(np.asarray(state["norm"][k])) for k in ("mean", "var"))
    scale, bias = (torch.tensor(np.asarray(params["norm"][k])) for k in ("scale", "bias"))
    y = torch.nn.functional.batch_norm(y, mean, var, scale, bias, training=False, eps=1e-5)
    return torch.relu(y)


def reference_branches(columns, params, state, z):
    """The inputs of f_C's last join: f_{C+1}(z) = join(f_C(f_C(z)), conv(z)), joins merged."""
    if columns == 1:
        return [reference_unit(params, state, z)]
    deep_params, deep_state = params["deep"], state["deep"]
    inner = torch.stack(reference_branches(columns - 1, deep_params["first"], deep_state["first"], z))
    middle = inner.mean(0)
    outer = reference_branches(columns - 1, deep_params["second"], deep_state["second"], middle)
    return [*outer, reference_unit(params["shallow"], state["shallow"], z)]


def test_forward_matches_the_expansion_rule_in_torch():
    widths, columns = (4, 6), 3
    net = models.get("fractalnet20", widths=widths, num_classes=5)
    _, params, state = net.init(jax.random.key(0), (-1, 8, 8, 3))
    rng = np.random.default_rng(0)
    perturb = lambda leaf: leaf + 0.1 * rng.normal(size=leaf.shape).astype(np.float32)  # noqa: E731
    params, state = jax.tree.map(perturb, params), jax.tree.map(lambda s: jnp.abs(perturb(s)), state)
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        logits, _ = jax.jit(lambda p, x: net.apply(p, state, x))(params, x)

    z = torch.tensor(x).permute(0, 3, 1, 2)
    for index in range(1, len(widths) + 1):
        block_params, block_state = params[f"block{index}"]["fractal"], state[f"block{index}"]["fractal"]
        z = torch.stack(reference_branches(columns, block_params, block_state, z)).mean(0)
        z = torch.nn.functional.max_pool2d(z, 2)
    fc = params["head"]["fc"]
    expected = z.mean((2, 3)) @ torch.tensor(np.asarray(fc["kernel"])) + torch.tensor(np.asarray(fc["bias"]))
    assert logits.shape == (2, 5)
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-5, atol=1e-5)


# --- drop-path ----------------------------------------------------------------------------------

BRANCHES = (1.0, 10.0, 100.0)  # the mean of every non-empty subset is distinct
SUBSET_OF_MEAN = {
    round(float(np.mean(subset)), 3): subset
    for size in (1, 2, 3)
    for subset in itertools.combinations(BRANCHES, size)
}


def join_outputs(drop_path, keys):
    join = Join(drop_path)
    xs = tuple(jnp.full((1, 2, 2, 1), value) for value in BRANCHES)
    outputs = jax.vmap(lambda key: join.apply({}, {}, xs, key=key, train=True)[0])(keys)
    return np.asarray(outputs).reshape(len(keys), -1)


def test_join_in_evaluation_is_the_plain_mean():
    xs = tuple(jnp.full((2, 3, 3, 4), value) for value in BRANCHES)
    y, _ = Join(0.5).apply({}, {}, xs)
    np.testing.assert_allclose(y, np.full((2, 3, 3, 4), 37.0))
    assert Join(0.5).init(None, tuple(x.shape for x in xs))[0] == (2, 3, 3, 4)


def test_local_drop_path_drops_branches_but_keeps_one():
    outputs = join_outputs(0.5, jax.random.split(jax.random.key(0), 400))
    assert np.all(outputs == outputs[:, :1])  # one draw for the whole batch
    subsets = [SUBSET_OF_MEAN[round(float(value), 3)] for value in outputs[:, 0]]  # KeyError: not a mean
    assert all(len(subset) >= 1 for subset in subsets)
    assert any(len(subset) < 3 for subset in subsets) and any(len(subset) == 3 for subset in subsets)
    # each branch survives with probability (1 - p) + p^3 / 3: kept itself, or rescued when all went
    expected = 0.5 + 0.5**3 / 3
    for value in BRANCHES:
        assert abs(np.mean([value in subset for subset in subsets]) - expected) < 0.08


def test_drop_path_near_one_keeps_exactly_one_branch():
    outputs = join_outputs(0.999, jax.random.split(jax.random.key(1), 60))
    assert set(np.unique(outputs[:, 0])) == set(BRANCHES)


def test_drop_path_is_deterministic_for_a_key():
    keys = jnp.stack([jax.random.key(3)] * 2)
    first, second = join_outputs(0.5, keys)
    np.testing.assert_array_equal(first, second)


def test_network_drop_path_in_training_only():
    net = models.get("fractalnet20", widths=(4, 4), drop_path=0.5, norm=None)
    _, params, state = net.init(jax.random.key(0), (-1, 8, 8, 3))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 3)), jnp.float32)
    apply = jax.jit(net.apply, static_argnames="train")
    plain = models.get("fractalnet20", widths=(4, 4), norm=None)
    evaluation, _ = apply(params, state, x)
    np.testing.assert_allclose(evaluation, plain.apply(params, state, x)[0], rtol=1e-6)
    trained = [apply(params, state, x, key=jax.random.key(seed), train=True)[0] for seed in (0, 0, 1, 2, 3)]
    np.testing.assert_array_equal(trained[0], trained[1])
    assert any(not np.allclose(other, evaluation) for other in trained)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: Join(1.0), ValueError, r"Join\(drop_path=1.0\): the drop probability must be in \[0, 1\)"),
        (lambda: fractal_block(0, 8), ValueError, r"fractal_block\(columns=0\): a fractal has at least 1"),
        (
            lambda: models.get("fractalnet40", dropout=(0.1, 0.2)),
            ValueError,
            r"dropout=\(0.1, 0.2\) gives 2 rates for 5 blocks; give one per block, e.g. \(0.0, 0.1, 0.2",
        ),
    ],
)
def test_option_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_join_refuses_branches_of_different_shapes():
    with pytest.raises(
        ShapeError, match=r"Join: the branch shapes \[\(-1, 4, 4, 8\), \(-1, 4, 4, 6\)\] differ"
    ):
        Join().init(None, ((-1, 4, 4, 8), (-1, 4, 4, 6)))


def test_join_in_training_needs_a_key():
    xs = (jnp.ones((1, 2, 2, 1)),) * 2
    with pytest.raises(MissingKeyError, match=r"Join is random in training mode and needs a key"):
        Join(0.15).apply({}, {}, xs, train=True)


def test_paper_dropout_runs_and_adds_no_parameters(count):
    net = models.get("fractalnet20", widths=(4, 4), dropout=(0.0, 0.3), drop_path=0.15)
    _, params, state = net.init(jax.random.key(0), (-1, 8, 8, 3))
    y, _ = net.apply(params, state, jnp.ones((2, 8, 8, 3)), key=jax.random.key(1), train=True)
    assert y.shape == (2, 10) and bool(jnp.all(jnp.isfinite(y)))
    assert count("fractalnet20", dropout=(0, 0.1, 0.2, 0.3, 0.4)) == count("fractalnet20")
    assert math.isclose(models.fractalnet.PAPER_DROP_PATH, 0.15)
