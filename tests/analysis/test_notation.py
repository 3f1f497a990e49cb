"""`jc.pattern`: the notes' layer-pattern notation, its defaults and its error messages."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from helpers import random_params

import jaxconv as jc
from jaxconv.analysis import pattern, summary
from jaxconv.errors import PatternError

# Every example of the notes' "Layer Patterns" section, with the layers it must give.
NOTES_EXAMPLES = {
    "INPUT -> FC": ["Flatten", "Dense"],
    "INPUT -> CONV -> RELU -> FC": ["Conv", "Relu", "Flatten", "Dense"],
    "INPUT -> [CONV -> RELU -> POOL]*2 -> FC -> RELU -> FC": (
        ["Conv", "Relu", "MaxPool"] * 2 + ["Flatten", "Dense", "Relu", "Dense"]
    ),
    "INPUT -> [CONV -> RELU -> CONV -> RELU -> POOL]*3 -> [FC -> RELU]*2 -> FC": (
        ["Conv", "Relu", "Conv", "Relu", "MaxPool"] * 3 + ["Flatten"] + ["Dense", "Relu"] * 2 + ["Dense"]
    ),
    "INPUT -> [[CONV -> RELU]*2 -> POOL]*3 -> [FC -> RELU]*2 -> FC": (
        ["Conv", "Relu", "Conv", "Relu", "MaxPool"] * 3 + ["Flatten"] + ["Dense", "Relu"] * 2 + ["Dense"]
    ),
}


def kinds(net: jc.Layer) -> list[str]:
    return [jc.info(child).kind for _, child in jc.info(net).children]


@pytest.mark.parametrize("text", NOTES_EXAMPLES)
def test_every_pattern_of_the_notes_builds_and_runs(text):
    net = pattern(text, widths=8, fc_widths=16, num_classes=10)
    assert kinds(net) == NOTES_EXAMPLES[text]
    params, state = random_params(net, (-1, 32, 32, 3))
    y, _ = jax.jit(net.apply)(params, state, jnp.ones((2, 32, 32, 3)))
    assert y.shape == (2, 10) and bool(jnp.all(jnp.isfinite(y)))


def test_the_general_pattern_with_letter_counts_and_optional_pools():
    text = "INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC"
    net = pattern(text, counts={"N": 2, "M": 7, "K": 1}, widths=4, max_width=16)
    s = summary(net, (-1, 32, 32, 3))
    convs = [row for row in s.rows if row.kind == "Conv"]
    pools = [row for row in s.rows if row.kind == "MaxPool"]
    # 32 -> 16 -> 8 -> 4 -> 2 -> 1: the last two optional pools are skipped
    assert [row.output_shape[0] for row in pools] == [16, 8, 4, 2, 1]
    assert [row.output_shape[-1] for row in convs] == [4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16]
    assert s.output_shape == (-1, 10)
    assert len(kinds(pattern(text, counts={"N": 1, "M": 3, "K": 0}, optional_pools=False))) == 3 * 2 + 2
    assert kinds(
        pattern("INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> FC", counts={"N": 0, "M": 0, "K": 0})
    ) == [
        "Flatten",
        "Dense",
    ]


def test_vgg16_from_the_notation_has_the_published_parameter_count():
    text = "INPUT -> [[CONV -> RELU]*2 -> POOL]*2 -> [[CONV -> RELU]*3 -> POOL]*3 -> [FC -> RELU]*2 -> FC"
    net = pattern(text, widths=[64, 128, 256, 512, 512], fc_widths=4096, num_classes=1000)
    assert summary(net, (-1, 224, 224, 3)).params == 138_357_544
    doubled = pattern(text, widths=64, max_width=512, fc_widths=[4096, 4096], num_classes=1000)
    assert summary(doubled, (-1, 224, 224, 3)).params == 138_357_544


def test_defaults_are_the_notes_rules_of_thumb():
    net = pattern("CONV -> POOL -> CONV", widths=8)
    conv, pool, second = (jc.info(child) for _, child in jc.info(net).children)
    assert (conv.spec["kernel_size"], conv.spec["padding"], conv.spec["features"]) == (3, 1, 8)
    assert (pool.kind, pool.spec["window"], pool.spec["stride"]) == ("MaxPool", 2, 2)
    assert second.spec["features"] == 16  # doubled after the pool
    five = jc.info(jc.info(pattern("CONV", kernel_size=5)).children[0][1]).spec
    assert five["padding"] == 2  # P = (F - 1)/2 keeps the size


def test_norm_dropout_and_average_pooling():
    net = pattern(
        "input -> conv -> bn -> relu -> pool -> dropout -> fc", widths=4, pool="avg", dropout_rate=0.25
    )
    assert kinds(net) == ["Conv", "BatchNorm", "Relu", "AvgPool", "Dropout", "Flatten", "Dense"]
    params, state = random_params(net, (-1, 8, 8, 1))
    train = jax.jit(lambda p, s, x, key: net.apply(p, s, x, key=key, train=True))
    y, _ = train(params, state, jnp.ones((2, 8, 8, 1)), jax.random.key(1))
    assert y.shape == (2, 10)


def caret(error: pytest.ExceptionInfo) -> int:
    """The position the message's caret points at."""
    lines = str(error.value).splitlines()
    return lines[2].index("^") - 2


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("INPUT -> [CONV -> RELU]]*2", r"expected '->' or the end, found '\]'", 23),
        ("INPUT -> [CONV -> RELU", r"expected '\]', found the end", 22),
        ("CONV -> RELU*", r"expected a repeat count such as 2 or N, found the end", 13),
        ("CONV => RELU", r"unexpected character '='", 5),
        ("CONV -> SOFTMAX", r"unknown layer 'SOFTMAX'; use one of INPUT, CONV", 8),
        ("FC -> RELU -> CONV", r"CONV after FC: the volume is already flattened", 14),
        ("[CONV -> RELU]*N", r"the repeat count N has no value; pass counts=\{'N': 2\}", 15),
        ("CONV? -> FC", r"only POOL can be optional, not CONV", 0),
        ("CONV -> INPUT", r"INPUT can only come first", 8),
        ("CONV -> -> FC", r"expected a layer name or '\[', found '->'", 8),
    ],
)
def test_malformed_patterns_point_at_the_fault(text, message, position):
    with pytest.raises(PatternError, match=message) as error:
        pattern(text)
    assert isinstance(error.value, ValueError)
    assert str(error.value).splitlines()[1] == f"  {text}"
    assert caret(error) == position


def test_an_unclosed_bracket_notes_where_it_opened():
    with pytest.raises(PatternError, match=r"expected '\]'") as error:
        pattern("[[CONV -> RELU]*2 -> POOL")
    assert error.value.__notes__ == ["the '[' at position 0 is not closed"]


def test_width_lists_must_match_the_pattern():
    with pytest.raises(ValueError, match=r"has 4 CONV layers in 2 stages; give 4 widths \(one per CONV\), 2"):
        pattern("[CONV -> CONV -> POOL]*2", widths=[8, 16, 32])
    with pytest.raises(ValueError, match=r"has 2 FC layers before the last; give 2 widths or one int"):
        pattern("[FC -> RELU]*2 -> FC", fc_widths=[8])
    with pytest.raises(ValueError, match=r"pattern\(pool='min'\): use 'max' or 'avg'"):
        pattern("POOL", pool="min")
