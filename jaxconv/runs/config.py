"""The configuration of a training run: every choice in one JSON-ready dataclass.

`TrainConfig` is what ``jaxconv train`` writes to ``config.json`` in the run
directory and what a resumed run reads back, so a run can always be repeated
from its directory alone. `TrainConfig.validate` rejects bad values before any
data is loaded or any step is taken.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import optax

from jaxconv.data.mixing import parse_mix
from jaxconv.errors import ConfigError
from jaxconv.models import DEFAULT_MODEL
from jaxconv.train.ema import with_ema
from jaxconv.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule, with_lookahead


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What the train step does to each batch on the device before normalising.

    ``crop_padding``: pad by P pixels per side and crop back at a random offset
    (0: no crop); ``flip``: mirror left-right with probability 1/2.
    """

    crop_padding: int = 0
    flip: bool = False

    @classmethod
    def parse(cls, text: str, field: str = "augment") -> Augmentation:
        """Read ``'none'``, ``'flip'``, ``'crop'`` (P = 4), ``'crop=2'`` or ``'crop=2,flip'``;
        errors name the option as ``field`` (``augment`` or ``tta``)."""
        crop_padding, flip, seen = 0, False, set()
        for part in filter(None, re.split(r"[,+\s]+", text.strip().lower())):
            match = re.fullmatch(r"crop(?:[=:](\d+))?", part)
            name = "crop" if match else part
            if name in seen:
                raise ConfigError(
                    f"{field}={text!r} names {name!r} twice; give each augmentation once, e.g. 'crop=2,flip'"
                )
            seen.add(name)
            if part == "none":
                continue
            if part == "flip":
                flip = True
            elif match:
                crop_padding = int(match.group(1) or 4)
            else:
                raise ConfigError(
                    f"{field}={text!r}: unknown augmentation {part!r}; use 'none', 'flip', 'crop', "
                    "'crop=P' (pad P pixels and crop back) or a combination such as 'crop=2,flip'"
                )
        return cls(crop_padding, flip)

    def __str__(self) -> str:
        parts = ([f"crop={self.crop_padding}"] if self.crop_padding else []) + (["flip"] if self.flip else [])
        return ",".join(parts) or "none"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; the defaults train the default model on Fashion-MNIST.

    Attributes:
      model: a name from ``jaxconv models``.
      dataset: 'fashion_mnist', 'mnist' or 'cifar10'.
      epochs: passes over the training set.
      batch_size: examples per step (at most the training set's size).
      lr: the peak learning rate of the schedule.
      optimizer: 'sgd' (heavy-ball momentum), 'nesterov', 'adam' or 'adamw'.
      schedule: 'constant', 'cosine', 'step' (x0.1 at 50% and 75%) or 'onecycle'.
      warmup_epochs: a linear ramp from 0 to ``lr`` first (for 'onecycle', the
        length of its rising half; 0 there means the usual 30%).
      weight_decay: on kernels only (not biases or normalisation); decoupled for
        'adamw', an L2 term in the gradient otherwise.
      momentum: for 'sgd' and 'nesterov'.
      label_smoothing: the weight of the uniform distribution in the targets.
      augment: see `Augmentation.parse`.
      seed: the one seed of the run: initialisation, data order, augmentation, dropout.
      eval_batch_size: examples per evaluation step.
      devices: devices to train on, data parallel (`jaxconv.distributed`): all processes'
        together in a multi-process run; the batch size must divide by it.
      dp_epsilon: train with DP-SGD to this epsilon (`jaxconv.runs.private`); None: not private.
        ``batch_size`` is then the expected size of the Poisson-sampled batches.
      dp_delta: the delta of the (epsilon, delta) guarantee; below 1 / the number of examples.
      dp_clip: C, the L2 norm each example's gradient is clipped to.
      augmult: DP-SGD's augmentation multiplicity K (De et al. 2022): each example of a
        step in K augmented copies, its gradient the mean of theirs, then clipped.
      physical_batch_size: DP-SGD: compute each Poisson batch in chunks of this many
        examples (virtual batches: memory bounded by a chunk); None: all at once.
      ema_decay: keep an exponential moving average of the weights with this decay
        (`jaxconv.train.with_ema`), evaluated beside the weights each epoch; 0: none.
      lookahead_steps: k of Lookahead (`jaxconv.train.with_lookahead`): every k steps the slow
        weights move ``lookahead_alpha`` of the way to the trained ones; 0: none.
      lookahead_alpha: the slow weights' step, in (0, 1].
      mix: 'none', 'mixup', 'mixup=ALPHA', 'cutmix' or 'cutmix=ALPHA' (`jaxconv.data.parse_mix`),
        on one device without DP-SGD.
      tta: test-time augmentation, in `Augmentation.parse`'s terms: 'flip', 'crop=P' or
        'crop=P,flip' average the evaluation over `jaxconv.data.test_views`; 'none': one view.
      checkpoint_every: also save a checkpoint every this many steps inside an epoch (with the
        data's position, so that a resumed run continues mid-epoch exactly), not with DP-SGD or
        several models; 0: at the end of each epoch only.
    """

    model: str = DEFAULT_MODEL
    dataset: str = "fashion_mnist"
    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    warmup_epochs: float = 0.0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.1
    augment: str = "none"
    seed: int = 0
    eval_batch_size: int = 1000
    devices: int = 1
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    augmult: int = 1
    physical_batch_size: int | None = None
    ema_decay: float = 0.0
    lookahead_steps: int = 0
    lookahead_alpha: float = 0.5
    mix: str = "none"
    tta: str = "none"
    checkpoint_every: int = 0

    def validate(self) -> TrainConfig:
        """Raise `ConfigError` naming the first bad value and a fix; return self."""
        checks = [
            (self.epochs >= 1, f"epochs={self.epochs}: train for at least 1 epoch"),
            (self.batch_size >= 1, f"batch_size={self.batch_size}: use a positive batch size, e.g. 128"),
            (self.eval_batch_size >= 1, f"eval_batch_size={self.eval_batch_size}: use a positive size"),
            (self.devices >= 1, f"devices={self.devices}: use at least 1 device"),
            (
                self.batch_size % max(self.devices, 1) == 0,
                f"batch_size={self.batch_size} does not split over devices={self.devices}; use a multiple "
                f"of {self.devices}, e.g. {max(1, round(self.batch_size / max(self.devices, 1))) * self.devices}",
            ),
            (self.lr > 0, f"lr={self.lr}: the learning rate must be positive, e.g. --lr 0.003"),
            (self.optimizer in OPTIMIZERS, f"optimizer={self.optimizer!r}: valid optimizers: {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"schedule={self.schedule!r}: valid schedules: {SCHEDULES}"),
            (
                0 <= self.warmup_epochs < self.epochs,
                f"warmup_epochs={self.warmup_epochs}: must be >= 0 and less than epochs={self.epochs}",
            ),
            (self.weight_decay >= 0, f"weight_decay={self.weight_decay}: must be >= 0 (0 turns it off)"),
            (0 <= self.momentum < 1, f"momentum={self.momentum}: must be in [0, 1), e.g. 0.9"),
            (
                0 <= self.label_smoothing < 1,
                f"label_smoothing={self.label_smoothing}: must be in [0, 1), e.g. 0.1",
            ),
        ]
        checks += self._option_checks() + self._private_checks()
        for ok, message in [*_number_checks(self), *checks]:
            if not ok:
                raise ConfigError(message)
        self.augmentation, self.test_augmentation  # noqa: B018  (parse, raising on a bad value)
        return self

    def _private_checks(self) -> list[tuple[bool, str]]:
        """The checks of the DP-SGD fields: valid values, and only in a private run."""
        checks = [
            (self.augmult >= 1, f"augmult={self.augmult}: the copies of each example, at least 1, e.g. 16"),
            (
                self.physical_batch_size is None or self.physical_batch_size >= 1,
                f"physical_batch_size={self.physical_batch_size}: the examples computed at once, e.g. 256",
            ),
        ]
        if self.dp_epsilon is None:
            for name, value in (
                ("augmult", self.augmult != 1),
                ("physical_batch_size", self.physical_batch_size),
            ):
                flag = "--" + name.replace("_", "-")
                checks.append(
                    (not value, f"{name} ({flag}) applies to DP-SGD only: add --dp-epsilon or drop {flag}")
                )
        else:
            checks += [
                (self.dp_epsilon > 0, f"dp_epsilon={self.dp_epsilon}: must be positive, e.g. 3"),
                (0 < self.dp_delta < 1, f"dp_delta={self.dp_delta}: must be in (0, 1), e.g. 1e-5"),
                (self.dp_clip > 0, f"dp_clip={self.dp_clip}: the clip norm must be positive, e.g. 1.0"),
                (
                    self.devices == 1,
                    f"devices={self.devices}: DP-SGD training runs on one device; drop --devices",
                ),
                (self.mix == "none", f"mix={self.mix!r}: DP-SGD trains on unmixed examples; drop --mix"),
            ]
        return checks

    def _option_checks(self) -> list[tuple[bool, str]]:
        """The checks of the EMA, Lookahead, mixing and test-time augmentation options."""
        checks = [
            (0 <= self.ema_decay < 1, f"ema_decay={self.ema_decay}: must be in [0, 1), e.g. 0.999"),
            (
                self.checkpoint_every >= 0 and (self.checkpoint_every == 0 or self.dp_epsilon is None),
                f"checkpoint_every={self.checkpoint_every}: use N >= 1 steps (0: at epoch ends only), "
                "without DP-SGD (its Poisson batches have no position to resume from)",
            ),
            (
                self.lookahead_steps >= 0,
                f"lookahead_steps={self.lookahead_steps}: use k >= 1, e.g. 5 (0: none)",
            ),
            (
                0 < self.lookahead_alpha <= 1,
                f"lookahead_alpha={self.lookahead_alpha}: must be in (0, 1], e.g. 0.5",
            ),
        ]
        if parse_mix(self.mix) is not None:
            checks.append(
                (self.devices == 1, f"mix={self.mix!r} trains on one device; drop --devices or --mix")
            )
        return checks

    def check_data(self, image_shape: tuple[int, ...], examples: int) -> None:
        """Raise `ConfigError` for an option that does not fit the training data: images of
        ``image_shape`` (H, W, C), ``examples`` of them."""
        crop, smallest = self.augmentation.crop_padding, min(image_shape[:-1])
        if crop > smallest // 2:
            raise ConfigError(
                f"augment={self.augment!r}: a crop padding of {crop} pixels is more than half the "
                f"{'x'.join(map(str, image_shape[:-1]))} images, so most crops would be padding; "
                f"use crop=P with P <= {smallest // 2}, e.g. crop=4"
            )
        if self.dp_epsilon is not None and self.dp_delta >= 1 / examples:
            raise ConfigError(
                f"dp_delta={self.dp_delta:g} is not below 1/N = 1/{examples} = {1 / examples:.3g}: a "
                "delta that large allows leaking whole examples, so the epsilon means nothing; use "
                f"--dp-delta {10 ** math.floor(math.log10(0.1 / examples)):g} or smaller"
            )

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation.parse(self.augment)

    @property
    def test_augmentation(self) -> Augmentation:
        """The views of test-time augmentation (``tta``)."""
        return Augmentation.parse(self.tta, field="tta")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from plain data; unknown keys raise `ConfigError` (a newer or foreign file)."""
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown configuration keys {unknown}; known keys: {sorted(fields)}")
        return cls(**data)

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """``{field: (self's value, other's value)}`` for every field that differs."""
        mine, theirs = dataclasses.asdict(self), dataclasses.asdict(other)
        return {name: (mine[name], theirs[name]) for name in mine if mine[name] != theirs[name]}


SEED_RANGE = (-(2**63), 2**63 - 1)  # what `jax.random.key` takes


def _number_checks(config: TrainConfig) -> list[tuple[bool, str]]:
    """Every number option finite and of its type, the seed in `SEED_RANGE`; checked first, so the
    other checks can do arithmetic on them."""
    checks = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float):
            checks.append((math.isfinite(value), f"{field.name}={value}: give a finite number"))
    low, high = SEED_RANGE
    seed = config.seed
    checks.append(
        (isinstance(seed, int) and low <= seed <= high, f"seed={seed!r}: give an integer in [{low}, {high}]")
    )
    return checks


def optimizer_for(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optimiser and schedule ``config`` describes, for epochs of ``steps_per_epoch``."""
    schedule = make_schedule(
        config.schedule,
        config.lr,
        total_steps=config.epochs * steps_per_epoch,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
    )
    optimizer = make_optimizer(
        config.optimizer, schedule, weight_decay=config.weight_decay, momentum=config.momentum
    )
    if config.lookahead_steps:
        optimizer = with_lookahead(optimizer, config.lookahead_steps, config.lookahead_alpha)
    return with_ema(optimizer, config.ema_decay) if config.ema_decay else optimizer
