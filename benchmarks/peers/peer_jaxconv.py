"""jaxconv through its public API: the default model or the zoo, `jaxconv.train`'s step, and
`jaxconv.inference` (BatchNorm folded) for inference."""

from __future__ import annotations

import jax
from harness import Contestant, xla_memory
from jax_common import batches, carried, sgd
from workloads import Workload

import jaxconv as jc
import jaxconv.train as jt
from jaxconv.models.small import convnet

ZOO_NAMES = {"resnet20": "resnet20", "resnet50": "resnet50_tv"}


def build(workload: Workload) -> Contestant:
    if workload.resnet is None:
        net = convnet(num_classes=workload.num_classes)
    else:
        net = jc.models.get(ZOO_NAMES[workload.name], num_classes=workload.num_classes)
    optimizer = sgd()
    images, labels, infer_images = batches(workload)
    train_state = jt.init_train_state(net, optimizer, (-1, *workload.image_shape), jax.random.key(0))
    step = jt.make_train_step(net, optimizer)  # jitted, donates the train state

    def train(train_state, images, labels):
        train_state, metrics = step(train_state, images, labels)
        return train_state, metrics["loss"]

    train_step, current = carried(train, train_state, images, labels)
    # inference as a user serves a trained model: BatchNorm folded into the convolutions once
    # (again only when the weights have changed), then the folded net jitted
    folded_net = jc.inference.fold_batchnorm(net, train_state.params, train_state.state)[0]
    fold = jax.jit(lambda params, state: jc.inference.fold_batchnorm(net, params, state)[1:])
    predict = jc.inference.make_predict(folded_net)
    folded = {}

    def infer():
        if folded.get("weights") is not current():
            folded["weights"], folded["folded"] = current(), fold(current().params, current().state)
        return predict(*folded["folded"], infer_images)

    def peak_memory():
        return xla_memory(step.lower(current(), images, labels))

    return Contestant(jt.count_params(train_state.params), train_step, infer, peak_memory, jc.__version__)
