"""A training budget that follows the data: warm up, hold the learning rate while validation
improves, then cool down and stop.

A cosine schedule fixed to `max_epochs` ties the learning rate to a number the user guessed:
too few epochs and it reaches zero while the model is still learning, too many and the model
idles at a high rate. Here the schedule has three phases (warm-up, stable, decay: the "WSD"
schedule of MiniCPM and of Hägele et al., 2024, "Scaling Laws and Compute-Optimal Training
Beyond Fixed Training Durations"), and the decay starts when it is needed:

- validation has not improved for `patience` epochs (a plateau at this learning rate): neither
  its score nor its loss. The loss counts because a discrete score can sit still while the
  model learns: a speech recogniser's WER stays at the word prior for ten epochs or more
  before it starts to read the audio, while its validation loss keeps falling; or
- the epoch cap or the time limit would otherwise cut the decay short.

The decay lasts `cooldown_fraction` of the epochs run before it (at least one), and training
stops when it ends. The best epoch's weights are kept, as before.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import Callback, Timer

FLOOR = 0.02  # the learning rate at the end of the decay, as a share of the peak
LOSS_MIN_DELTA = 1e-3  # a validation loss this much lower (relative) counts as an improvement

StopReason = Literal["plateau", "epochs", "time"]


class LearningRateShape:
    """The learning rate's factor at each optimiser step, for `torch.optim.lr_scheduler.LambdaLR`.

    A callable object rather than a function so that LambdaLR saves its state (the decay's
    start and length) in checkpoints, and `--resume` continues the same schedule."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = max(1, warmup_steps)
        self.decay_start: int | None = None
        self.decay_steps = 1

    def __call__(self, step: int) -> float:
        if self.decay_start is None:
            return min(1.0, (step + 1) / self.warmup_steps)
        progress = min(1.0, (step - self.decay_start) / self.decay_steps)
        return FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))

    @property
    def decaying(self) -> bool:
        return self.decay_start is not None

    def decay(self, start: int, steps: int) -> None:
        self.decay_start, self.decay_steps = start, max(1, steps)

    def decay_ended(self, step: int) -> bool:
        return self.decay_start is not None and step >= self.decay_start + self.decay_steps


def decay_epochs(epochs_run: int, fraction: float) -> int:
    return max(1, math.ceil(fraction * epochs_run))


class Budget(Callback):
    """Starts the decay when validation plateaus or the budget nears its end, and stops
    training when the decay is over. Replaces early stopping: a plateau ends training too, but
    only after a short decay, which is where most of the last points of accuracy come from."""

    def __init__(
        self,
        shape: LearningRateShape,
        steps_per_epoch: int,
        patience: int,
        cooldown_fraction: float,
        max_epochs: int,
    ) -> None:
        self.shape = shape
        self.steps_per_epoch = steps_per_epoch
        self.patience = patience
        self.cooldown_fraction = cooldown_fraction
        self.max_epochs = max_epochs
        self.best = -math.inf
        self.best_loss = math.inf
        self.epochs_since_best = 0
        self.stop_reason: StopReason | None = None
        self._epoch_seconds: list[float] = []
        self._epoch_started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """Runs after the epoch's validation, so val_score is this epoch's."""
        self._epoch_seconds.append(time.perf_counter() - self._epoch_started)
        metrics = trainer.callback_metrics
        self._record(metrics.get("val_score"), metrics.get("val_loss"))
        step = trainer.global_step
        if self.shape.decaying:
            if self.shape.decay_ended(step):
                trainer.should_stop = True
            return
        epochs_run = trainer.current_epoch + 1
        decision = self.decay_decision(epochs_run, self._epochs_in_time_left(trainer))
        if decision is not None:
            self.stop_reason, epochs = decision
            self.shape.decay(step, epochs * self.steps_per_epoch)

    def _record(self, score: object, loss: object) -> None:
        """Count epochs since the score or the loss last improved."""
        if score is None and loss is None:
            return
        improved = False
        if score is not None and float(score) > self.best:
            self.best, improved = float(score), True
        if loss is not None and float(loss) < self._loss_to_beat():
            self.best_loss, improved = float(loss), True
        self.epochs_since_best = 0 if improved else self.epochs_since_best + 1

    def _loss_to_beat(self) -> float:
        if math.isinf(self.best_loss):
            return self.best_loss
        return self.best_loss - LOSS_MIN_DELTA * abs(self.best_loss)

    def decay_decision(
        self, epochs_run: int, epochs_in_time: int | None
    ) -> tuple[StopReason, int] | None:
        """Why and for how many epochs to decay now, or None to hold the learning rate."""
        wanted = decay_epochs(epochs_run, self.cooldown_fraction)
        epochs_left = self.max_epochs - epochs_run
        if epochs_left <= wanted:
            return "epochs", max(1, epochs_left)
        if epochs_in_time is not None and epochs_in_time <= wanted:
            return "time", max(1, epochs_in_time)
        if self.epochs_since_best >= self.patience:
            return "plateau", wanted
        return None

    def _epochs_in_time_left(self, trainer: L.Trainer) -> int | None:
        """Whole epochs that fit in the time left on Lightning's `max_time` timer (which
        carries the time already spent across `--resume`), at the pace of the last few."""
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        left = timer.time_remaining() if timer is not None else None
        if left is None or not self._epoch_seconds:
            return None
        recent = self._epoch_seconds[-3:]
        return max(0, int(left // (sum(recent) / len(recent))))

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_loss": self.best_loss,
            "epochs_since_best": self.epochs_since_best,
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.best_loss = state["best_loss"]
        self.epochs_since_best = state["epochs_since_best"]
        self.stop_reason = state["stop_reason"]
