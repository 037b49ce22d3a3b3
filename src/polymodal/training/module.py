"""The LightningModule: the loss, the validation metric and the optimiser; nothing else."""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy

from polymodal.config import TrainSettings
from polymodal.network import MultimodalNet, drop_modalities
from polymodal.training.augment import augment_batch
from polymodal.training.budget import LearningRateShape

GRADIENT_CLIP_NORM = 1.0  # the gradients' global norm is clipped to this at every step
# devices on which torch has a fused AdamW kernel (torch.optim.optimizer keeps the list private)
FUSED_ADAMW_DEVICES = frozenset({"cpu", "cuda", "mps", "xpu"})


def adamw_kernel(weights: list[torch.nn.Parameter]) -> dict[str, bool]:
    """AdamW's fused kernel where torch has one for the weights' device, else its foreach
    kernels (torch's default on a CPU is a loop over the weights). The fused kernel reads and
    writes each weight once per step: AV-MNIST's network (141,018 weights) stepped in 0.68 ms
    against 1.21 ms with foreach and 1.55 ms with the loop, on 2 CPU cores (AMX Xeon)."""
    devices = {weight.device.type for weight in weights}
    floating = all(weight.is_floating_point() for weight in weights)
    if weights and floating and devices <= FUSED_ADAMW_DEVICES:
        return {"fused": True}
    return {"foreach": True}


def plain_steps_suffice(trainer: L.Trainer) -> bool:
    """Whether a training step needs nothing of Lightning's strategy and precision plugins
    but their hooks: one process, and full or mixed precision without a gradient scaler (not
    fp16). Data-parallel strategies prepare each backward pass; a scaler scales the loss."""
    precision = trainer.strategy.precision_plugin
    return (
        type(trainer.strategy) is SingleDeviceStrategy
        and type(precision) in (Precision, MixedPrecision)
        and getattr(precision, "scaler", None) is None
    )


class PolymodalModule(L.LightningModule):
    def __init__(
        self, net: MultimodalNet, settings: TrainSettings, lr_shape: LearningRateShape
    ) -> None:
        super().__init__()
        self.net = net
        self.settings = settings
        self.lr_shape = lr_shape  # the Budget callback starts its decay
        self._valid_outputs: list[dict] = []
        self._train_loss_sum: torch.Tensor | float = 0.0  # this epoch's, logged at its end
        self._train_steps = 0
        self._train_rows = 0  # this process's, this epoch
        self.rows_per_process: list[int] = []  # last epoch's training rows, per process
        self.trainable_weights: list[torch.nn.Parameter] = []  # set with the optimiser
        self.plain_steps = False  # set when training starts: backward_and_step
        self.frozen_keys = {f"net.{name}" for name in net.frozen_state_names()}
        self.strict_loading = not self.frozen_keys  # resuming: frozen weights are not saved
        # training_step takes the optimiser step itself (Lightning's "manual optimization"):
        # the automatic loop wraps the same calls in a closure and more hooks (with the
        # clipping's module walk, 0.3 ms of a 12 ms AV-MNIST step on 2 cores, timed in place)
        self.automatic_optimization = False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Leave frozen backbones out of checkpoints: they never change, and a base-size one
        would otherwise write hundreds of MB at every epoch."""
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in self.frozen_keys}

    def transfer_batch_to_device(self, batch: dict, device: torch.device, index: int) -> dict:
        """Batches are made on the CPU: there they need no copy, and Lightning's generic walk
        over the nested dict would cost about a millisecond a step."""
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, index)

    def forward(self, inputs: dict) -> dict[str, torch.Tensor]:
        return self.net(inputs)

    def combined_loss(self, outputs: dict, targets: dict) -> torch.Tensor:
        """Sum over targets of weight × that target's loss."""
        total = 0.0
        for name, task in zip(self.net.target_names, self.net.tasks, strict=True):
            values, known = targets[name]
            total = total + task.state.weight * task.loss(outputs[name], values, known)
        return total

    def training_step(self, batches: list[dict], call_index: int) -> torch.Tensor:
        """One optimiser step on each of `batches`, in order (Lightning hands over a few at a
        time: fit.py's `StepGroups`); the last one's loss.

        Lightning's autocast, which wraps this call, keeps no cache of the weights' bf16
        copies (`cache_enabled=False`), so a step's forward pass sees the weights the step
        before it wrote (tested: the same losses as one batch a call)."""
        for batch in batches:
            loss = self.step_on(batch)
        return loss

    def step_on(self, batch: dict) -> torch.Tensor:
        """The loss of one batch, then one optimiser step on it and one step of the learning
        rate's schedule."""
        inputs = batch["inputs"]
        if self.settings.augment:
            inputs = augment_batch(inputs, self.net.input_kinds)
        inputs = drop_modalities(inputs, self.settings.modality_dropout)
        loss = self.combined_loss(self.net(inputs, batch["targets"]), batch["targets"])
        # Lightning runs training_step under mixed precision's autocast. The backward pass and
        # the step leave it: torch advises against a backward pass under autocast, and in bf16
        # the attention fusion's gradients differed from those of one outside it
        with torch.autocast(self.device.type, enabled=False):
            self.backward_and_step(loss)
        self.lr_schedulers().step()
        # Summed here and logged once an epoch: self.log at every step cost about a millisecond
        # (profiled), some 5% of a step of the default AV-MNIST model on 2 cores.
        self._train_loss_sum = self._train_loss_sum + loss.detach()
        self._train_steps += 1
        self._train_rows += self._size(batch)
        return loss

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """Gradients of `loss`, clipped, and one AdamW step.

        In one process without a gradient scaler, torch's own calls: Lightning's wrappers
        (`manual_backward` and its optimiser's `step`) only run hooks there, none of which
        polymodal uses, and cost 0.3 ms a step (2 % of an AV-MNIST step on 2 CPU cores, timed
        in place against these calls). Lightning still counts the step (`global_step`)."""
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        if not self.plain_steps:
            self.manual_backward(loss)
            self.clip_gradient_norm()
            optimizer.step()
            return
        loss.backward()
        self.clip_gradient_norm()
        optimizer._on_before_step()  # Lightning's step counter: set by its manual loop
        optimizer.optimizer.step()
        optimizer._on_after_step()

    def on_train_start(self) -> None:
        self.plain_steps = plain_steps_suffice(self.trainer)

    def validation_step(self, batch: dict, batch_index: int) -> None:
        encoded = self.net.encode(batch["inputs"])
        # fused once for both calls when a head is also run without its target
        fused = self.net.fuse_encoded(encoded) if self.net.teacher_forced else None
        outputs = self.net.head_outputs(encoded, batch["targets"], fused)
        loss = self.combined_loss(outputs, batch["targets"])
        self.log("val_loss", loss, prog_bar=True, batch_size=self._size(batch))
        predicted = outputs
        if any(task.teacher_forced and not task.scored_by_loss for task in self.net.tasks):
            # generated outputs; a target scored by its loss keeps its teacher-forced ones
            by_loss = {
                name: batch["targets"][name]
                for name, task in zip(self.net.target_names, self.net.tasks, strict=True)
                if task.scored_by_loss
            }
            predicted = self.net.head_outputs(encoded, by_loss, fused)
        self._valid_outputs.append(
            {name: (predicted[name].detach().float().cpu(), *[t.cpu() for t in batch["targets"][name]])
             for name in self.net.target_names}
        )  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        """Runs at the end of each training epoch: logs its mean training loss and the
        validation score."""
        if self._train_steps:
            self.log("train_loss", self._train_loss_sum / self._train_steps, prog_bar=True)
            self._train_loss_sum, self._train_steps = 0.0, 0
            counts = self.all_gather(torch.tensor(self._train_rows))  # every process calls this
            self.rows_per_process = [int(n) for n in counts.reshape(-1).tolist()]
            self._train_rows = 0
        if not self._valid_outputs:
            return
        scores = []
        for name, task in zip(self.net.target_names, self.net.tasks, strict=True):
            outputs, values, known = (
                torch.cat([step[name][part] for step in self._valid_outputs]).numpy()
                for part in range(3)
            )
            score = task.validation_score(outputs, values, known.astype(bool))
            scores.append(0.0 if math.isnan(score) else score)
        self._valid_outputs.clear()
        if len(scores) == 1:
            score = scores[0]
        else:  # several targets: their scales differ, so rank epochs by the combined loss
            score = -float(self.trainer.callback_metrics.get("val_loss", torch.tensor(0.0)))
        self.log("val_score", score, prog_bar=True)

    def clip_gradient_norm(self) -> None:
        """Clip the gradients' global norm with foreach kernels (one call for all weights;
        torch uses them only on CUDA unless asked). The weights are listed once, when the
        optimiser is made: walking the network's modules at every step cost about 0.1 ms."""
        torch.nn.utils.clip_grad_norm_(self.trainable_weights, GRADIENT_CLIP_NORM, foreach=True)

    def configure_optimizers(self) -> dict:
        """AdamW without decay on norms, biases and embeddings; pretrained backbones at their
        own (lower) learning rate; frozen weights left out. The learning rate follows
        `lr_shape`, stepped by `training_step` after each batch; Lightning saves the
        schedule's state in checkpoints."""
        scales = self.net.learning_rate_scales()
        self.trainable_weights = [p for p in self.net.parameters() if p.requires_grad]
        groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
        for name, parameter in self.net.named_parameters():
            if not parameter.requires_grad:
                continue
            decays = not (parameter.ndim < 2 or "embed" in name or "position" in name)
            groups.setdefault((decays, scales.get(name, 1.0)), []).append(parameter)
        optimizer = torch.optim.AdamW(
            [
                {
                    "params": params,
                    "weight_decay": self.settings.weight_decay if decays else 0.0,
                    "lr": self.settings.lr * scale,
                }
                for (decays, scale), params in groups.items()
            ],
            lr=self.settings.lr,
            **adamw_kernel(self.trainable_weights),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_shape)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    @staticmethod
    def _size(batch: dict) -> int:
        first = next(iter(batch["inputs"].values()))
        return int(first["present"].shape[0])
