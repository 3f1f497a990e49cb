"""`jc.summary`'s training-memory models against XLA's memory analysis of a compiled train step.

The train step is what `jaxconv.train` runs: the gradient of a cross-entropy loss
and an Optax update, with params, optimiser state and layer state donated. XLA's
total is ``argument + output + temp - alias`` bytes of ``compiled.memory_analysis()``
on the CPU backend. Prints the notes' model, the 'xla' model and their ratios to it.

    python benchmarks/memory_vs_xla.py [--batch-size 32]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import jaxconv as jc


def nets() -> dict[str, tuple[jc.Layer, tuple[int, ...]]]:
    """Small nets of each layer family, (net, input shape), compiled in seconds."""
    return {
        "lenet5": (jc.models.get("lenet5"), jc.models.input_shape("lenet5")),
        "vgg_style": (
            jc.pattern(
                "INPUT -> [[CONV -> RELU]*2 -> POOL]*3 -> [FC -> RELU]*2 -> FC", widths=32, fc_widths=256
            ),
            (-1, 32, 32, 3),
        ),
        "resnet20": (jc.models.get("resnet20"), jc.models.input_shape("resnet20")),
        "all_cnn_c": (jc.models.get("all_cnn_c"), jc.models.input_shape("all_cnn_c")),
        "nin_cifar": (jc.models.get("nin_cifar"), jc.models.input_shape("nin_cifar")),
        "densenet40_12": (jc.models.get("densenet40_12"), jc.models.input_shape("densenet40_12")),
    }


def xla_train_step_bytes(
    net: jc.Layer, input_shape: tuple[int, ...], batch_size: int, optimizer: optax.GradientTransformation
) -> int:
    """``argument + output + temp - alias`` bytes of the compiled, donated train step."""
    params, state = jax.eval_shape(lambda key: net.init(key, input_shape)[1:], jax.random.key(0))
    opt_state = jax.eval_shape(optimizer.init, params)

    def loss(params, state, x, labels, key):
        logits, state = net.apply(params, state, x, key=key, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), state

    def step(params, opt_state, state, x, labels, key):
        (value, state), grads = jax.value_and_grad(loss, has_aux=True)(params, state, x, labels, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, state, value

    x = jax.ShapeDtypeStruct((batch_size, *input_shape[1:]), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    key = jax.eval_shape(lambda: jax.random.key(0))
    compiled = (
        jax.jit(step, donate_argnums=(0, 1, 2)).lower(params, opt_state, state, x, labels, key).compile()
    )
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("nets", nargs="*", help="a subset of the nets (default: all)")
    args = parser.parse_args()
    optimizer = optax.sgd(0.1, momentum=0.9)
    print(f"batch {args.batch_size}, SGD with momentum, float32, XLA CPU")
    print("| net | XLA (MiB) | 'xla' model (MiB) | ratio | notes' model (MiB) | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (net, shape) in nets().items():
        if args.nets and name not in args.nets:
            continue
        s = jc.summary(net, shape, optimizer=optimizer)
        xla = xla_train_step_bytes(net, shape, args.batch_size, optimizer)
        ours, notes = s.memory(args.batch_size, "xla").total, s.memory(args.batch_size).total
        mib = 2**20
        print(
            f"| {name} | {xla / mib:.2f} | {ours / mib:.2f} | {ours / xla:.2f} | {notes / mib:.2f} "
            f"| {notes / xla:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
