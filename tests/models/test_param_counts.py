"""The parameter table that `jaxconv models` prints equals every model's count, traced now."""

from __future__ import annotations

import pytest

from jaxconv.models import count_model_params, names, param_counts

COUNTS = param_counts()


def test_every_model_has_a_row_and_no_row_is_stale():
    assert sorted(COUNTS) == sorted(names()), "run scripts/param_counts.py"


@pytest.mark.slow
@pytest.mark.parametrize("name", names())
def test_the_row_is_the_traced_count(name):
    assert COUNTS.get(name) == count_model_params(name), "run scripts/param_counts.py"


def test_published_counts_in_the_table():
    assert COUNTS["convnet"] == 421_738 and COUNTS["dp_cnn"] == 26_010
    assert COUNTS["vgg16"] == 138_357_544 and COUNTS["resnet50_tv"] == 25_557_032
