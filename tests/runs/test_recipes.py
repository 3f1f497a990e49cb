"""``--recipe``: each recipe is a valid configuration of a registered model; the ResNet-20 recipe
is the command of the measured run in experiments/README.md; options given win over a recipe's."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import jaxconv as jc
from jaxconv import cli
from jaxconv.errors import ConfigError
from jaxconv.runs.recipes import RECIPES, recipe

EXPERIMENTS = Path(__file__).parents[2] / "experiments" / "README.md"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_is_a_valid_configuration(name):
    config = jc.runs.TrainConfig(**recipe(name)).validate()
    assert jc.models.spec(config.model) is not None


def test_the_resnet20_recipe_is_the_measured_command():
    row = next(
        line for line in EXPERIMENTS.read_text().splitlines() if "ResNet-20, 60k images, 15 epochs" in line
    )
    command = re.findall(r"`([^`]*jaxconv train[^`]*)`", row)[0]
    argv = shlex.split(command.split("jaxconv ", 1)[1])
    measured = cli._options(cli._parser().parse_args(argv))
    measured.pop("devices")  # 8 forced CPU devices, data parallel: the same training
    assert {name: recipe("resnet20")[name] for name in measured} == measured


def test_options_given_replace_the_recipes():
    args = cli._parser().parse_args(["train", "--recipe", "resnet20", "--epochs", "3", "--lr", "0.05"])
    assert cli._options(args) == recipe("resnet20") | {"epochs": 3, "lr": 0.05}
    with pytest.raises(ConfigError, match=r"unknown recipe 'fast'; recipes: \['convnet', 'resnet20'\]"):
        recipe("fast")
