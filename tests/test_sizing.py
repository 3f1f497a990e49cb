"""The notes' sizing rule, its errors and fixes, and receptive fields."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax

import jaxconv as jc
from jaxconv import sizing


@pytest.mark.parametrize(
    ("W", "F", "S", "P", "D", "expected"),
    [
        (7, 3, 1, 0, 1, 5),  # the notes' 1-D example: 7x7 input, 3x3 filter, stride 1
        (7, 3, 2, 0, 1, 3),  # ... and stride 2
        (5, 3, 1, 1, 1, 5),  # the notes' 1-D figure with P=1
        (227, 11, 4, 0, 1, 55),  # AlexNet's first layer (the paper's 224 does not fit)
        (224, 3, 1, 1, 1, 224),  # every VGG conv
        (224, 2, 2, 0, 1, 112),  # every VGG pool
        (32, 5, 1, 2, 1, 32),  # the notes' CONV layer example keeps 32x32
        (10, 3, 1, 0, 2, 6),  # dilation 2: the filter spans 5
        (10, 3, 2, (0, 1), 1, 5),  # per-side padding
    ],
)
def test_output_size_matches_the_notes(W, F, S, P, D, expected):
    assert sizing.output_size(W, F, S, P, D, strict=True) == expected


def test_sizes_that_do_not_fit_floor_by_default_and_raise_when_strict():
    assert sizing.output_size(10, 3, 2) == 4
    message = "Conv(F=3, S=2, P=0) on W=10: (W - F + 2P)/S + 1 = 4.5 is not an integer"
    with pytest.raises(jc.SizeError, match=re.escape(message)):
        sizing.output_size(10, 3, 2, strict=True)
    with pytest.raises(jc.SizeError, match=r"D\*\(F - 1\)"):
        sizing.output_size(10, 3, 2, D=2, strict=True, layer="MaxPool")


def test_strict_block_applies_to_layers_that_do_not_choose():
    net = jc.serial(jc.Conv(4, 3, stride=2), jc.Conv(4, 3, stride=2, strict=False))
    assert net.init(jc_key(), (-1, 10, 10, 1))[0] == (-1, 1, 1, 4)  # 10 -> 4 -> 1, floored
    with sizing.strict(), pytest.raises(jc.SizeError, match="W=10"):
        net.init(jc_key(), (-1, 10, 10, 1))
    with sizing.strict():  # the second conv opted out: 9 -> 4 floors silently
        assert jc.Conv(4, 3, stride=2, strict=False).init(jc_key(), (-1, 10, 10, 1))[0] == (-1, 4, 4, 4)


def test_filter_larger_than_padded_input_always_raises():
    with pytest.raises(jc.SizeError, match=r"filter spans 5 but the padded input is only W \+ 2P = 4"):
        sizing.output_size(2, 5, P=1)


@given(
    W=st.integers(1, 60), F=st.integers(1, 7), S=st.integers(2, 5), P=st.integers(0, 3), D=st.integers(1, 3)
)
def test_every_suggested_fix_fits(W, F, S, P, D):
    if sizing.effective_filter(F, D) > W + 2 * P or sizing.fits(W, F, S, P, D):
        return
    with pytest.raises(jc.SizeError) as error:
        sizing.output_size(W, F, S, P, D, strict=True)
    message = str(error.value)
    fixes = 0
    for p, out in re.findall(r"\bP=(\d+) would give (\d+)", message):
        assert sizing.output_size(W, F, S, int(p), D, strict=True) == int(out)
        fixes += 1
    for lo, hi, out in re.findall(r"padding \((\d+), (\d+)\) per side would give (\d+)", message):
        assert sizing.output_size(W, F, S, (int(lo), int(hi)), D, strict=True) == int(out)
        fixes += 1
    for s, out in re.findall(r"\bS=(\d+) would give (\d+)", message):
        assert sizing.output_size(W, F, int(s), P, D, strict=True) == int(out)
        fixes += 1
    assert fixes >= 1


@given(W=st.integers(1, 50), F=st.integers(1, 9), S=st.integers(1, 4), D=st.integers(1, 3))
def test_same_padding_agrees_with_xla(W, F, S, D):
    pads = sizing.padding_pairs("SAME", [W], [F], [S], [D])
    assert list(pads) == [tuple(p) for p in lax.padtype_to_pads((W,), ((F - 1) * D + 1,), (S,), "SAME")]
    assert sizing.output_size(W, F, S, pads[0], D) == -(-W // S)


@given(W=st.integers(1, 50), F=st.integers(0, 4).map(lambda k: 2 * k + 1))
def test_zero_padding_of_half_the_filter_preserves_size(W, F):
    if W >= F:
        assert sizing.output_size(W, F, 1, (F - 1) // 2) == W


def test_padding_forms():
    pairs = sizing.padding_pairs
    assert pairs(1, [5, 5], [3, 3], [1, 1], [1, 1]) == ((1, 1), (1, 1))
    assert pairs((1, 2), [5, 5], [3, 3], [1, 1], [1, 1]) == ((1, 1), (2, 2))
    assert pairs(((0, 1), (2, 3)), [5, 5], [3, 3], [1, 1], [1, 1]) == ((0, 1), (2, 3))
    assert pairs("valid", [5], [3], [1], [1]) == ((0, 0),)
    assert pairs("SAME", [-1], [3], [1], [1]) == ((-1, -1),)
    with pytest.raises(ValueError, match="'FULL' is not a mode"):
        pairs("FULL", [5], [3], [1], [1])
    with pytest.raises(ValueError, match="does not fit 2 spatial axes"):
        pairs((1, 2, 3), [5, 5], [3, 3], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="negative"):
        pairs(-1, [5], [3], [1], [1])


def test_receptive_fields():
    assert sizing.receptive_fields([(3, 1, 1)] * 3) == [(3, 1), (5, 1), (7, 1)]  # three 3x3 see 7x7
    assert sizing.receptive_fields([(3, 1, 1), (2, 2, 1), (3, 1, 1)]) == [(3, 1), (4, 2), (8, 2)]
    assert sizing.receptive_fields([(3, 1, 1), (3, 1, 2), (3, 1, 4)]) == [(3, 1), (7, 1), (15, 1)]


def test_transpose_output_size_inverts_the_convolution():
    for W, F, S, P in [(8, 3, 2, 1), (16, 4, 2, 1), (5, 5, 1, 2)]:
        out = sizing.output_size(W, F, S, P)
        extra = W - sizing.transpose_output_size(out, F, S, P)
        assert 0 <= extra < S or (S == 1 and extra == 0)


def jc_key():
    import jax

    return jax.random.key(0)
