"""The budget that follows the data: warm-up, hold while validation improves, decay, stop."""

from types import SimpleNamespace

import pytest
import torch

from polymodal.training import budget as budget_module
from polymodal.training.budget import FLOOR, Budget, LearningRateShape
from polymodal.training.fit import warmup_steps


def test_shape_warms_up_holds_then_decays_to_the_floor():
    shape = LearningRateShape(warmup_steps=4)
    assert [shape(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert shape(1000) == 1.0, "no decay until the budget asks for one"
    shape.decay(start=1000, steps=100)
    assert shape(1000) == pytest.approx(1.0)
    assert shape(1050) == pytest.approx(FLOOR + (1 - FLOOR) / 2)
    assert shape(1100) == pytest.approx(FLOOR) and shape(5000) == pytest.approx(FLOOR)
    assert not shape.decay_ended(1099) and shape.decay_ended(1100)


def test_the_decay_survives_a_checkpoint():
    """LambdaLR saves a callable object's state: --resume continues the same decay."""
    weight = torch.nn.Parameter(torch.zeros(1))
    shape = LearningRateShape(warmup_steps=2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([weight], lr=1.0), shape)
    shape.decay(start=40, steps=10)
    saved = scheduler.state_dict()
    fresh = LearningRateShape(warmup_steps=2)
    again = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([weight], lr=1.0), fresh)
    again.load_state_dict(saved)
    assert fresh.decaying and fresh(45) == pytest.approx(shape(45)) and fresh(45) < 1.0


def run_epochs(
    budget: Budget,
    scores: list[float],
    steps_per_epoch: int = 10,
    during=lambda: None,
    losses: list[float] | None = None,
    callbacks: tuple = (),
) -> list[int]:
    """Feed validation scores (and losses: 1.0 each by default) epoch by epoch as Lightning
    would (`during` runs inside each epoch); the epochs that ran."""
    ran = []
    losses = losses or [1.0] * len(scores)
    for epoch, (score, loss) in enumerate(zip(scores, losses, strict=True)):
        trainer = SimpleNamespace(
            callback_metrics={"val_score": torch.tensor(score), "val_loss": torch.tensor(loss)},
            global_step=(epoch + 1) * steps_per_epoch,
            current_epoch=epoch,
            should_stop=False,
            callbacks=list(callbacks),
        )
        budget.on_train_epoch_start(trainer, None)
        during()
        budget.on_train_epoch_end(trainer, None)
        ran.append(epoch)
        if trainer.should_stop:
            break
    return ran


def test_a_plateau_starts_a_short_decay_then_training_stops():
    shape = LearningRateShape(warmup_steps=10)
    budget = Budget(shape, steps_per_epoch=10, patience=3, cooldown_fraction=0.25, max_epochs=100)
    scores = [0.5, 0.6, 0.7, 0.8, 0.8, 0.79, 0.8] + [0.85] * 50
    ran = run_epochs(budget, scores)
    # best at epoch 3; three epochs without a better score (4, 5, 6): decay over
    # ceil(0.25 × 7) = 2 epochs from the end of epoch 6, so epochs 7 and 8 run and 8 is the last
    assert budget.stop_reason == "plateau" and shape.decay_start == 70 and shape.decay_steps == 20
    assert ran[-1] == 8


def test_a_falling_validation_loss_is_not_a_plateau():
    """A WER stuck at the word prior while the loss falls: the model is learning (a speech
    recogniser does this for ten epochs before it reads the audio); once neither improves for
    `patience` epochs, that is a plateau."""
    shape = LearningRateShape(warmup_steps=10)
    budget = Budget(shape, steps_per_epoch=10, patience=3, cooldown_fraction=0.25, max_epochs=100)
    scores = [-0.9] * 12 + [-0.5] * 40
    losses = [2.6 - 0.01 * epoch for epoch in range(12)] + [2.0] * 40
    ran = run_epochs(budget, scores, losses=losses)
    # both last improved at epoch 12; epochs 13-15 without: decay from 16 for ceil(4) epochs
    assert budget.stop_reason == "plateau" and shape.decay_start == 160 and ran[-1] == 19


def test_the_epoch_cap_leaves_room_for_the_decay():
    """A model still improving when the cap nears: the decay is fitted in before the cap."""
    shape = LearningRateShape(warmup_steps=10)
    budget = Budget(shape, steps_per_epoch=10, patience=3, cooldown_fraction=0.25, max_epochs=20)
    ran = run_epochs(budget, [0.01 * epoch for epoch in range(20)])
    # after 15 epochs run, 5 left > ceil(0.25 × 15) = 4; after 16, 4 left <= 4: the last 4 decay
    assert budget.stop_reason == "epochs" and shape.decay_start == 160 and shape.decay_steps == 40
    assert ran[-1] == 19


def test_the_time_limit_leaves_room_for_the_decay(monkeypatch):
    """Epochs of 10 s under a 200 s limit on Lightning's timer: the decay starts while it
    still fits."""
    from lightning.pytorch.callbacks import Timer

    now = [0.0]
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: now[0])

    class ClockTimer(Timer):
        def time_remaining(self, stage: str = "train") -> float:
            return 200.0 - now[0]

    shape = LearningRateShape(warmup_steps=10)
    budget = Budget(shape, steps_per_epoch=10, patience=50, cooldown_fraction=0.25, max_epochs=1000)

    def ten_seconds() -> None:
        now[0] += 10.0

    scores = [0.01 * epoch for epoch in range(100)]
    ran = run_epochs(
        budget, scores, during=ten_seconds, callbacks=(ClockTimer(duration="00:00:00:01"),)
    )
    # after 16 epochs (160 s) 4 fit, and ceil(0.25 × 16) = 4 are wanted: the last 4 decay
    assert budget.stop_reason == "time" and shape.decay_start == 160 and ran[-1] == 19


def test_warmup_is_an_epoch_but_never_more_than_a_tenth_of_the_cap():
    settings = SimpleNamespace(warmup_epochs=1.0, max_epochs=60)
    assert warmup_steps(settings, steps_per_epoch=100) == 100
    assert warmup_steps(SimpleNamespace(warmup_epochs=1.0, max_epochs=2), 100) == 20


def test_training_ends_on_a_plateau_long_before_the_cap(tmp_path):
    """End to end: a tiny model that stops improving stops well before a cap of 200 epochs,
    says a plateau ended it, and the learning rate ends near the floor."""
    from polymodal import Model
    from tests.media import shapes_and_tones, tiny_config

    data = shapes_and_tones(tmp_path / "data", rows=48)
    config = tiny_config(max_epochs=200, patience=2, batch_size=16)
    model = Model(target="label", inputs=["picture", "sound"], config=config).fit(data)
    history = model.metrics_["history"]
    assert model.metrics_["stop_reason"] == "plateau"
    assert 4 <= len(history) < 60, len(history)


def test_models_saved_with_the_retired_cosine_setting_still_load():
    from polymodal.config import TrainSettings

    settings = TrainSettings.model_validate({"max_epochs": 15, "warmup_fraction": 0.05})
    assert settings.max_epochs == 15 and settings.warmup_epochs == 1.0
    with pytest.raises(ValueError, match="warmup_fractoin"):
        TrainSettings.model_validate({"warmup_fractoin": 0.05})  # a typo is still an error


def test_batch_and_learning_rate_follow_the_training_rows():
    """Left open, the batch grows to 128 once an epoch still holds 50 such steps, and the
    learning rate with its square root; a batch or rate the user set is kept."""
    from polymodal.config import TrainSettings

    small, large = TrainSettings().for_rows(6399), TrainSettings().for_rows(6400)
    assert (small.batch_size, small.lr) == (64, pytest.approx(2e-3))
    assert (large.batch_size, large.lr) == (128, pytest.approx(2e-3 * 2**0.5))
    assert TrainSettings(batch_size=256).for_rows(10).lr == pytest.approx(4e-3)
    assert TrainSettings(batch_size=16).for_rows(10).lr == pytest.approx(2e-3), "never below"
    assert TrainSettings(lr=1e-4).for_rows(10_000).lr == 1e-4
    assert TrainSettings(batch_size=32).for_rows(10_000).batch_size == 32
    assert large.for_rows(10) == large, "settings already chosen stay as they are"


def test_the_model_trains_and_saves_the_batch_chosen_for_its_rows(tmp_path, monkeypatch):
    """7,200 rows (6,480 train): batches of 128 at the scaled rate, written in the saved config."""
    import json

    import numpy as np
    import pandas as pd

    import polymodal.training.datamodule as datamodule
    from polymodal import Model
    from tests.media import tiny_config

    sizes = []
    original = datamodule.batch_loader

    def recording(part, rows, batch_size, *args, **kwargs):
        sizes.append(batch_size)
        return original(part, rows, batch_size, *args, **kwargs)

    monkeypatch.setattr(datamodule, "batch_loader", recording)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=7200), "y": rng.normal(size=7200)})
    frame["label"] = np.where(frame["x"] > 0, "up", "down")
    frame.to_csv(tmp_path / "rows.csv", index=False)
    config = tiny_config(max_epochs=1, batch_size=None)
    model = Model(target="label", config=config).fit(tmp_path / "rows.csv", out=tmp_path / "m")
    assert model.metrics_["history"][0]["train_rows"] == [6480]  # one process
    assert sizes[0] == 128, "the training loader's batches"
    assert model.config.train.lr == pytest.approx(2e-3 * 2**0.5)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["config"]["train"]
    assert (saved["batch_size"], saved["lr"]) == (128, pytest.approx(2e-3 * 2**0.5))
