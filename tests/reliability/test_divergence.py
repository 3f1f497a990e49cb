"""Divergence: the rule (`jaxconv.runs.divergence`) on loss histories, and a fit whose loss
explodes, which must stop, exit non-zero and keep the checkpoint of its best epoch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest
from synthetic import dataset, tiny_net

import jaxconv as jc
import jaxconv.cli as cli
from jaxconv.errors import DivergenceError
from jaxconv.runs import Run, TrainConfig, fit
from jaxconv.runs.divergence import Divergence
from jaxconv.train import evaluate, init_train_state, load_checkpoint, make_eval_step, make_preprocess

RULE = Divergence()


def records(*pairs):
    return [{"train_loss": loss, "test_top1": top1} for loss, top1 in pairs]


RECORDED = Path(__file__).resolve().parent.parent.parent / "experiments" / "results"


def recorded_histories():
    """The epoch records of the 20 runs in experiments/results (Fashion-MNIST with TrainConfig's
    recipe, AdamW at 3e-3 and label smoothing 0.1, 3 to 15 epochs), as those runs wrote them."""
    for name in (
        "fashion_mnist_table_full",
        "fashion_mnist_table",
        "depth",
        "normalisation",
        "small_filters",
    ):
        for row in json.loads((RECORDED / name / "results.json").read_text())["rows"]:
            yield row["history"]


def test_runs_that_learned_never_trip_the_rule_and_the_one_that_did_not_does():
    histories = list(recorded_histories())
    assert len(histories) == 20
    learned_nothing = 0
    for history in histories:
        verdicts = [RULE.check(history[:epoch], 10) for epoch in range(1, len(history) + 1)]
        if max(record["test_top1"] for record in history) <= 0.1:  # normalisation.py's plain VGG
            learned_nothing += 1
            assert verdicts[:2] == [None, None] and "at chance (10%) for 3 epochs" in verdicts[2]
        else:
            assert verdicts == [None] * len(history)
    assert learned_nothing == 1


@pytest.mark.parametrize(
    ("history", "reason"),
    [
        (records((math.nan, 0.1)), "is nan"),
        (records((5.8e6, 0.1)), "more than 3 times the 2.3 of a uniform guess"),  # --lr 1000
        (records((0.5, 0.9), (0.4, 0.91), (4.6, 0.3)), "rose to 4.6 in epoch 3, from 0.4"),
        (records((2.3, 0.1), (2.3, 0.1), (2.31, 0.12)), "at chance (10%) for 3 epochs"),
    ],
)
def test_what_counts_as_diverged(history, reason):
    assert reason in RULE.check(history, 10)


def test_what_does_not():
    assert RULE.check(records((2.3, 0.1), (2.3, 0.1)), 10) is None  # not yet 3 epochs
    assert RULE.check(records((0.01, 0.9), (0.05, 0.9)), 10) is None  # 5x a tiny loss, below ln K
    assert RULE.check(records((1.2, 0.1), (1.1, 0.1), (1.0, 0.1)), 10) is None  # learning (train)


class DivergesAt:
    """The default rule, and a divergence forced at ``epoch`` (as a late explosion would)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def check(self, history, num_classes):
        return "forced" if len(history) == self.epoch else RULE.check(history, num_classes)


def test_a_diverged_fit_stops_and_keeps_the_best_and_last_good_checkpoints(tmp_path):
    train, test = dataset(128), dataset(64, "test", seed=1)
    config = TrainConfig(epochs=4, batch_size=32, lr=3e-3)
    run, config = Run.open(tmp_path / "run", config)
    with pytest.raises(DivergenceError, match=r"forced; the checkpoint of the last good epoch is kept"):
        fit(tiny_net(), train, test, config, run=run, progress=False, divergence_rule=DivergesAt(3))
    history = run.history()
    assert [record["epoch"] for record in history] == [1, 2, 3]  # the diverged epoch is logged
    assert run.load(like=_template(config, train))[1]["epoch"] == 2
    best_epoch = max(history[:2], key=lambda record: record["test_top1"])
    best_state, metadata = load_checkpoint(run.path / "best.npz", like=_template(config, train))
    assert metadata["epoch"] <= 2
    evaluation = evaluate(
        make_eval_step(tiny_net(), preprocess=make_preprocess(train.mean, train.std)),
        best_state.params, best_state.state, test, config.eval_batch_size,
    )  # fmt: skip
    assert evaluation.top1 == best_epoch["test_top1"]  # evaluated again, from the file
    assert sorted(int(path.name) for path in (run.path / "orbax").iterdir()) == [4, 8]  # epochs 1 and 2


def test_an_exploding_learning_rate_fails_the_run_and_says_so(tmp_path, capsys, tiny_model, data_dir):
    status = cli.main(
        ["train", "--model", tiny_model, "--epochs", "1", "--lr", "1000", "--batch-size", "32",
         "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "run"), "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1 and "training diverged" in err and "lower the learning rate" in err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "--lr" in results["fix"] and results["checkpoint"] is None


def _template(config, train):
    optimizer = jc.runs.config.optimizer_for(config, len(train) // config.batch_size)
    return init_train_state(tiny_net(), optimizer, (-1, 28, 28, 1), jax.random.split(jax.random.key(0))[0])


def test_records_are_never_lost_to_a_torn_line(tmp_path):
    run = Run(tmp_path)
    run.log({"epoch": 1, "test_top1": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"epoch": 2, "test_to')  # a crash in the middle of the append
    (tmp_path / ".checkpoint.npz.abc.tmp").write_bytes(b"half a checkpoint")
    run.log({"epoch": 2, "test_top1": 0.6})
    assert [record["epoch"] for record in run.history()] == [1, 2]
    assert not list(tmp_path.glob(".*.tmp"))  # what an interrupted save left is gone
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2
    assert np.isclose(run.history()[-1]["test_top1"], 0.6)
