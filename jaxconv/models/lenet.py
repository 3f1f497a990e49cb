"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998), the first ConvNet pattern of the notes.

    INPUT 32x32x1 -> C1 CONV 6@5x5 -> S2 POOL 2x2 -> C3 CONV 16@5x5 -> S4 POOL 2x2
                  -> C5 CONV 120@5x5 (an FC layer on 5x5 maps) -> F6 FC 84 -> FC 10

Built as the textbook ("modern") LeNet-5 rather than the letter of the paper:
C3 connects to all six S2 maps (the paper's sparse connection table gives C3
1,516 instead of 2,416 weights), subsampling is a plain 2x2 average (the paper's
S2/S4 also had a trainable coefficient and bias per map), the non-linearity is
tanh (the paper scaled it, 1.7159 tanh(2x/3)), and the output is a Dense layer
instead of Euclidean RBF units. That gives 61,706 parameters on a 32x32 input
(the paper: "60,000 trainable parameters").
"""

from __future__ import annotations

from jaxconv.combinators import serial
from jaxconv.core import Layer, named
from jaxconv.layers import AvgPool, Conv, Dense, Flatten, MaxPool, Relu, Tanh
from jaxconv.models.registry import register


def lenet5(num_classes: int = 10, activation: str = "tanh", pool: str = "avg") -> Layer:
    """LeNet-5 on (N, 32, 32, C) inputs (pad 28x28 MNIST by 2): -> (N, num_classes).

    ``activation='relu'`` and ``pool='max'`` give the common modernised variant.
    Params: ``c1``, ``c3``, ``c5`` (convs), ``f6``, ``output`` (dense).
    """
    act = {"tanh": Tanh, "relu": Relu}.get(activation)
    subsample = {"avg": AvgPool(2), "max": MaxPool(2)}.get(pool)
    if act is None or subsample is None:
        raise ValueError(
            f"lenet5(activation={activation!r}, pool={pool!r}): choose activation 'tanh' or 'relu' "
            "and pool 'avg' or 'max'"
        )
    return serial(
        named("c1", Conv(6, 5)), act, subsample,
        named("c3", Conv(16, 5)), act, subsample,
        named("c5", Conv(120, 5)), act, Flatten,
        named("f6", Dense(84)), act,
        named("output", Dense(num_classes)),
    )  # fmt: skip


register("lenet5", lenet5, input_size=(32, 32, 1), num_classes=10)
