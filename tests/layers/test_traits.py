"""Every public layer declares what the tools need to know about it (`jaxconv.traits.Traits`), and
every public layer and combinator runs through the harness (`test_harness.LAYERS`)."""

from __future__ import annotations

import pytest

import jaxconv as jc
from jaxconv import core, traits
from tests.layers.test_harness import LAYERS

# The kinds of the public combinators and wrappers, which are functions rather than layers
COMBINATOR_KINDS = {
    "serial": "Serial",
    "parallel": "Parallel",
    "fan_out": "FanOut",
    "fan_in_concat": "FanInConcat",
    "residual": "Residual",
    "shape_dependent": "ShapeDependent",
    "Lambda": "Lambda",
    "wired": "Skip",  # the harness's wired graph
    "concat_with_input": "Serial",
    "with_aux_heads": "WithAuxHeads",
    "named": "Conv",
}


def harness_layers() -> list[tuple[str, core.LayerInfo]]:
    return [
        (f"{case}/{'/'.join(path)}", description)
        for case, (net, _) in LAYERS.items()
        for path, description in core.walk(net)
    ]


def public_kinds() -> set[str]:
    """The kind of every public layer: the value's own, a constructor's name (Conv -> 'Conv')."""
    kinds = set()
    for name in jc.layers.__all__:
        value = getattr(jc.layers, name)
        if isinstance(value, jc.Layer):
            kinds.add(core.info(value).kind)
        elif name[0].isupper():
            kinds.add(name)
    for name in ("Identity", "fan_in_sum"):
        kinds.add(core.info(getattr(jc, name)).kind)
    return kinds | set(COMBINATOR_KINDS.values())


def test_every_public_layer_is_in_the_harness():
    assert public_kinds() - {description.kind for _, description in harness_layers()} == set()


def test_the_kind_of_a_constructor_is_its_name():
    for name, net in [("Conv", jc.Conv(2, 1)), ("Elu", jc.Elu()), ("MaxPool", jc.MaxPool(2))]:
        assert core.info(net).kind == name


@pytest.mark.parametrize(("where", "description"), harness_layers(), ids=lambda value: str(value)[:60])
def test_every_layer_declares_valid_traits(where, description):
    declared = description.traits
    assert isinstance(declared, traits.Traits), f"{where} ({description.kind}) declares no traits"
    assert declared.field in traits.FIELDS
    assert declared.macs in traits.MACS
    assert len(declared.saved) == 2 and all(n in (0, 1, 2) for n in declared.saved)
    if declared.window is not None:
        assert declared.window in description.spec and declared.field == "window"
    if declared.in_place:
        assert declared.elementwise, "an in-place layer computes each value from its own input"


def test_traits_that_tools_rely_on():
    assert core.info(jc.Relu6).traits == core.info(jc.Relu).traits  # an in-place activation
    assert core.info(jc.BatchNorm()).traits.mixes_examples
    assert not core.info(jc.GroupNorm(2)).traits.mixes_examples
    assert core.info(jc.Conv(4, 3)).traits.tap and core.info(jc.Dense(3)).traits.tap
    assert not core.info(jc.Conv(4, 3, groups=2)).traits.tap  # grouped: vmap computes its gradient
    assert core.info(jc.Tanh).traits.output_derivative and not core.info(jc.Gelu).traits.in_place
    assert core.info(jc.Layer(lambda key, shape: (shape, {}, {}), None)).traits is None


def test_traits_refuse_unknown_values():
    with pytest.raises(ValueError, match=r"Traits\(field='windows'\): use one of"):
        traits.Traits(field="windows")
    with pytest.raises(ValueError, match=r"Traits\(macs='all'\): use one of"):
        traits.Traits(macs="all")
    with pytest.raises(
        ValueError, match=r"Traits\(window='kernel_size'\) slides a window: give field='window'"
    ):
        traits.Traits(window="kernel_size")
