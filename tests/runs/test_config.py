"""The run configuration: augmentation strings, validation messages, the JSON round trip."""

from __future__ import annotations

import json

import pytest

from jaxconv.errors import ConfigError
from jaxconv.runs import Augmentation, TrainConfig


@pytest.mark.parametrize(
    ("text", "crop_padding", "flip", "canonical"),
    [
        ("none", 0, False, "none"),
        ("", 0, False, "none"),
        ("flip", 0, True, "flip"),
        ("crop", 4, False, "crop=4"),
        ("Crop:2 + flip", 2, True, "crop=2,flip"),
        ("flip,crop=3", 3, True, "crop=3,flip"),
    ],
)
def test_augmentation_strings(text, crop_padding, flip, canonical):
    augmentation = Augmentation.parse(text)
    assert (augmentation.crop_padding, augmentation.flip) == (crop_padding, flip)
    assert str(augmentation) == canonical and Augmentation.parse(canonical) == augmentation


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 0}, r"batch_size=0: use a positive batch size"),
        ({"lr": 0.0}, r"lr=0.0: the learning rate must be positive, e.g. --lr 0.003"),
        (
            {"schedule": "poly"},
            r"schedule='poly': valid schedules: \('constant', 'cosine', 'step', 'onecycle'\)",
        ),
        ({"warmup_epochs": 8.0, "epochs": 8}, r"warmup_epochs=8.0: must be >= 0 and less than epochs=8"),
        ({"weight_decay": -1e-4}, r"weight_decay=-0.0001: must be >= 0"),
        ({"momentum": 1.0}, r"momentum=1.0: must be in \[0, 1\)"),
        ({"eval_batch_size": -5}, r"eval_batch_size=-5: use a positive size"),
    ],
)
def test_validation_names_the_value_and_the_rule(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change).validate()


def test_json_round_trip_and_differences():
    config = TrainConfig(model="resnet20", lr=0.1, augment="crop=4,flip")
    data = json.loads(config.to_json())
    assert data["model"] == "resnet20" and data["lr"] == 0.1
    assert TrainConfig.from_dict(data) == config
    assert config.differences(TrainConfig(model="resnet20")) == {
        "lr": (0.1, 0.003),
        "augment": ("crop=4,flip", "none"),
    }
    with pytest.raises(ConfigError, match=r"unknown configuration keys \['learning_rate'\]"):
        TrainConfig.from_dict({**data, "learning_rate": 0.1})
