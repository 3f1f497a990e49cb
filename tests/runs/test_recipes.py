"""``--recipe``: each recipe is a valid configuration of a registered model; the ResNet-20 recipe
is the command of the measured run in experiments/README.md; options given win over a recipe's."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import dp_accounting
import pytest

import jaxconv as jc
from jaxconv import cli
from jaxconv.errors import ConfigError
from jaxconv.runs.private import privacy_plan
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
    with pytest.raises(ConfigError, match=r"unknown recipe 'fast'; recipes: \['convnet', 'dp_fashion_mnist'"):
        recipe("fast")


def test_the_de_et_al_recipe_has_their_noise_and_its_epsilon_is_dp_accountings():
    """De et al. 2022, Table 9: sigma 10 for epsilon 1 over 875 steps of 4096 of CIFAR-10's 50,000;
    the smallest noise that keeps the recipe's 876 steps within epsilon 1 is 9.9 (De et al.'s
    sigma 10 spends 0.99), and its epsilon is dp_accounting's."""
    plan = privacy_plan(jc.runs.TrainConfig(**recipe("dp_wrn16_4_cifar10")), num_examples=50_000)
    assert plan.steps == 876 and plan.augmult == 16 and plan.max_batch_size % 256 == 0
    assert plan.noise_multiplier == pytest.approx(10.0, rel=0.015)
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(
        plan.sampling_rate, dp_accounting.GaussianDpEvent(plan.noise_multiplier)
    )
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, plan.steps))
    assert plan.epsilon() == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert plan.epsilon() <= 1.0
