"""Batching, augmentation, modality dropout, the time limit parser, precision, history and
checkpoints."""

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from polymodal.modalities.audio.augment import augment_spectrograms
from polymodal.modalities.image.augment import augment_images
from polymodal.network import drop_modalities
from polymodal.training.augment import augment_batch
from polymodal.training.batches import TensorBatches
from polymodal.training.fit import History, parse_max_time


def test_batches_cover_each_row_once_and_reshuffle():
    inputs = {
        "x": {"values": torch.arange(10).float(), "present": torch.ones(10, dtype=torch.bool)}
    }
    targets = {"y": (torch.arange(10), torch.ones(10, dtype=torch.bool))}
    batches = TensorBatches(inputs, targets, np.arange(10), batch_size=4, shuffle=True, seed=1)
    assert len(batches) == 3
    first = torch.cat([b["inputs"]["x"]["values"] for b in batches])
    second = torch.cat([b["inputs"]["x"]["values"] for b in batches])
    assert sorted(first.tolist()) == list(range(10)) and not torch.equal(first, second)
    for batch in batches:
        assert torch.equal(batch["inputs"]["x"]["values"].long(), batch["targets"]["y"][0])


def test_augmentation_keeps_shapes_and_changes_values():
    images = torch.randn(4, 3, 16, 16)
    moved = augment_images(images)
    assert moved.shape == images.shape and not torch.allclose(moved, images)
    spectra = torch.randn(4, 20, 50)
    masked = augment_spectrograms(spectra)
    assert masked.shape == spectra.shape and (masked == 0).any()
    batch = {"n": {"values": torch.ones(4, 1), "present": torch.ones(4, dtype=torch.bool)}}
    assert torch.equal(augment_batch(batch, {"n": "number"})["n"]["values"], torch.ones(4, 1))


def test_modality_dropout_keeps_one_input_per_row():
    present = torch.ones(200, dtype=torch.bool)
    batch = {name: {"values": torch.zeros(200), "present": present} for name in "abc"}
    dropped = drop_modalities(batch, 0.9, torch.Generator().manual_seed(0))
    kept = torch.stack([dropped[name]["present"] for name in "abc"], dim=1)
    assert kept.any(dim=1).all(), "every row keeps at least one input"
    assert 0 < kept.float().mean() < 0.6
    assert drop_modalities(batch, 0.0) is batch


def test_modality_dropout_takes_a_chance_per_input():
    """An input named with a chance is dropped at that rate; one not named never is."""
    present = torch.ones(4000, dtype=torch.bool)
    batch = {name: {"values": torch.zeros(4000), "present": present} for name in "abc"}
    dropped = drop_modalities(batch, {"a": 0.5, "b": 0.1}, torch.Generator().manual_seed(0))
    kept = {name: dropped[name]["present"].float().mean().item() for name in "abc"}
    assert kept["c"] == 1.0
    assert kept["a"] == pytest.approx(0.5, abs=0.04) and kept["b"] == pytest.approx(0.9, abs=0.03)
    assert drop_modalities(batch, {"a": 0.0}) is batch


def test_max_time_in_minutes_or_lightning_format():
    assert parse_max_time("10") == "00:00:10:00"
    assert parse_max_time("90.5") == "00:01:30:30"
    assert parse_max_time("00:02:00:00") == "00:02:00:00"
    assert parse_max_time(None) is None


def test_precision_is_bf16_only_where_the_hardware_computes_it(monkeypatch):
    from polymodal.training.fit import trainer_precision

    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer_precision("auto") == "32-true" and trainer_precision("bf16") == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert trainer_precision("auto") == "bf16-mixed" and trainer_precision("32") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert trainer_precision("auto") == "32-true", "an old GPU: the CPU's bf16 does not matter"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert trainer_precision("auto") == "bf16-mixed" and trainer_precision("32") == "32-true"


def test_history_holds_each_epochs_mean_training_loss(tmp_path, monkeypatch):
    """The training loss is summed per step and logged once an epoch: its mean, not the last
    step's; and with POLYMODAL_PROGRESS=0 Lightning draws no progress bar."""
    import lightning as L

    from polymodal import Model
    from polymodal.training.module import PolymodalModule
    from tests.media import shapes_and_tones, tiny_config

    steps: list[float] = []
    combined_loss = PolymodalModule.combined_loss

    def recorded(self, outputs, targets):
        loss = combined_loss(self, outputs, targets)
        if self.net.training:
            steps.append(float(loss))
        return loss

    bars = []
    fit = L.Trainer.fit

    def watched(trainer, *args, **kwargs):
        bars.append(trainer.progress_bar_callback)
        return fit(trainer, *args, **kwargs)

    monkeypatch.setattr(PolymodalModule, "combined_loss", recorded)
    monkeypatch.setattr(L.Trainer, "fit", watched)
    monkeypatch.setenv("POLYMODAL_PROGRESS", "0")
    data = shapes_and_tones(tmp_path / "data", rows=48)
    config = tiny_config(max_epochs=2, batch_size=8)
    model = Model(target="label", inputs=["picture", "sound"], config=config).fit(data)
    history = model.metrics_["history"]
    per_epoch = len(steps) // len(history)
    assert len(history) == 2 and per_epoch > 1 and len(steps) == 2 * per_epoch
    for epoch, row in enumerate(history):
        mean = np.mean(steps[epoch * per_epoch : (epoch + 1) * per_epoch])
        assert row["train_loss"] == pytest.approx(mean, rel=1e-4)
    assert bars == [None]


def test_each_step_clips_the_gradient_norm_then_steps_the_schedule(tmp_path, monkeypatch):
    """training_step takes the optimiser step itself: the gradients' global norm is clipped
    to 1 at every step, and the learning rate moves at every step (here: the final decay
    over the second of two epochs), not once an epoch."""
    from polymodal import Model
    from polymodal.training.module import GRADIENT_CLIP_NORM, PolymodalModule
    from tests.media import shapes_and_tones, tiny_config

    norms, rates = [], []
    clip = PolymodalModule.clip_gradient_norm

    def recorded(module):
        def norm() -> float:
            grads = [p.grad for p in module.net.parameters() if p.grad is not None]
            return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))

        before = norm()
        clip(module)
        norms.append((before, norm()))
        rates.append(module.optimizers().param_groups[0]["lr"])

    monkeypatch.setattr(PolymodalModule, "clip_gradient_norm", recorded)
    monkeypatch.setenv("POLYMODAL_PROGRESS", "0")
    data = shapes_and_tones(tmp_path / "data", rows=48)
    config = tiny_config(max_epochs=2, batch_size=8)
    model = Model(target="label", inputs=["picture", "sound"], config=config).fit(data)
    assert len(model.metrics_["history"]) == 2 and len(norms) >= 4
    for before, after in norms:
        assert after == pytest.approx(min(before, GRADIENT_CLIP_NORM), rel=1e-3)
    second_epoch = rates[len(rates) // 2 :]
    assert all(np.diff(second_epoch) < 0), second_epoch


def test_step_groups_hand_over_the_batches_a_few_at_a_time_in_order():
    from lightning.pytorch.callbacks import EMAWeightAveraging

    from polymodal.training.fit import STEPS_PER_CALL, StepGroups, steps_per_call

    groups = StepGroups(range(10), 4)
    assert len(groups) == 3 and list(groups) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(StepGroups(range(8), 4)) == 2 and list(StepGroups([], 4)) == []
    # Lightning's moving average updates once a call: one batch a call keeps its decay's meaning
    assert steps_per_call([EMAWeightAveraging(decay=0.9)]) == 1
    assert steps_per_call([]) == STEPS_PER_CALL > 1


def test_grouped_steps_train_as_one_batch_a_call_does(tmp_path, monkeypatch):
    """training_step steps the optimiser once per batch of its group: the same per-step
    losses (bitwise, in bf16 under Lightning's autocast) and learning rates as one batch a
    call, and Lightning's global step still counts optimiser steps. AdamW is torch's fused."""
    import lightning as L

    import polymodal.training.fit as fit
    from polymodal import Model
    from polymodal.training.module import PolymodalModule
    from tests.media import shapes_and_tones, tiny_config

    monkeypatch.setenv("POLYMODAL_PROGRESS", "0")
    data = shapes_and_tones(tmp_path / "data", rows=96)
    runs, kernels = [], set()
    step_on, training_step = PolymodalModule.step_on, PolymodalModule.training_step
    fit_trainer = L.Trainer.fit
    for steps in (1, 4):
        losses, rates, calls, global_steps = [], [], [], []

        def recorded_step(self, batch, losses=losses, rates=rates, step_on=step_on):
            loss = step_on(self, batch)
            losses.append(float(loss))
            rates.append(self.optimizers().param_groups[0]["lr"])
            kernels.add(self.optimizers().optimizer.defaults["fused"])
            return loss

        def recorded_call(self, batches, index, calls=calls, training_step=training_step):
            calls.append(len(batches))
            return training_step(self, batches, index)

        def watched(trainer, *args, global_steps=global_steps, fit_trainer=fit_trainer, **kw):
            fit_trainer(trainer, *args, **kw)
            global_steps.append(trainer.global_step)

        monkeypatch.setattr(fit, "STEPS_PER_CALL", steps)
        monkeypatch.setattr(PolymodalModule, "step_on", recorded_step)
        monkeypatch.setattr(PolymodalModule, "training_step", recorded_call)
        monkeypatch.setattr(L.Trainer, "fit", watched)
        config = tiny_config(max_epochs=2, batch_size=8, precision="bf16")
        config.model.fusion = "attention"
        Model(target="label", inputs=["picture", "sound"], config=config).fit(data)
        runs.append((losses, rates, calls, global_steps))
    (one_losses, one_rates, one_calls, _), (losses, rates, calls, global_steps) = runs
    assert losses == one_losses and rates == one_rates and len(losses) >= 16
    assert set(one_calls) == {1} and max(calls) == 4 and sum(calls) == len(losses)
    per_epoch = len(losses) // 2
    assert len(calls) == 2 * -(-per_epoch // 4)
    assert global_steps == [len(losses)]
    assert kernels == {True}


def test_adamw_takes_torchs_fused_kernel_where_it_has_one():
    from polymodal.training.module import adamw_kernel

    cpu = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))]
    assert adamw_kernel(cpu) == {"fused": True}
    assert adamw_kernel([torch.nn.Parameter(torch.ones(3, device="meta"))]) == {"foreach": True}
    assert adamw_kernel([]) == {"foreach": True}
    optimizer = torch.optim.AdamW(cpu, **adamw_kernel(cpu))  # torch accepts it
    assert optimizer.defaults["fused"] is True


def test_bf16_training_keeps_32_bit_weights_and_predictions(tmp_path, monkeypatch):
    """README: training runs in bf16 mixed precision where it can; predictions and saved
    weights stay 32-bit. bf16 is forced here, so the test means the same on any CPU."""
    import lightning as L
    from safetensors.torch import load_file

    from polymodal import Model
    from tests.media import shapes_and_tones, tiny_config

    precisions = []
    fit = L.Trainer.fit

    def watched(trainer, *args, **kwargs):
        precisions.append(trainer.precision)
        return fit(trainer, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "fit", watched)
    data = shapes_and_tones(tmp_path / "data", rows=32)
    config = tiny_config(max_epochs=1, precision="bf16")
    model = Model(target=["label", "score"], config=config).fit(data, out=tmp_path / "m")
    assert len(precisions) == 1 and precisions[0].startswith("bf16"), precisions
    weights = load_file(tmp_path / "m" / "model.safetensors")
    dtypes = {name: tensor.dtype for name, tensor in weights.items() if tensor.is_floating_point()}
    assert len(dtypes) > 20 and set(dtypes.values()) == {torch.float32}, dtypes
    assert {p.dtype for p in Model.load(tmp_path / "m").net_.parameters()} == {torch.float32}
    outputs = model.raw_outputs(data)
    assert {values.dtype for values in outputs.values()} == {np.dtype(np.float32)}


def test_plain_steps_train_as_lightnings_wrapped_steps_do(tmp_path, monkeypatch):
    """In one process, training_step calls torch's backward and AdamW's step itself: the
    same losses (bitwise, bf16) and the same global step as through Lightning's wrappers."""
    import lightning as L

    import polymodal.training.module as module
    from polymodal import Model
    from tests.media import shapes_and_tones, tiny_config

    monkeypatch.setenv("POLYMODAL_PROGRESS", "0")
    data = shapes_and_tones(tmp_path / "data", rows=64)
    step_on, manual_backward = module.PolymodalModule.step_on, L.LightningModule.manual_backward
    fit_trainer = L.Trainer.fit
    runs = {}
    for plain in (True, False):
        run = runs[plain] = {"losses": [], "wrapped": 0, "global_step": None}

        def recorded_step(self, batch, run=run):
            loss = step_on(self, batch)
            run["losses"].append(float(loss))
            return loss

        def counted_backward(self, loss, *args, run=run, **kwargs):
            run["wrapped"] += 1
            return manual_backward(self, loss, *args, **kwargs)

        def watched(trainer, *args, run=run, **kwargs):
            fit_trainer(trainer, *args, **kwargs)
            run["global_step"] = trainer.global_step

        monkeypatch.setattr(module.PolymodalModule, "step_on", recorded_step)
        monkeypatch.setattr(L.LightningModule, "manual_backward", counted_backward)
        monkeypatch.setattr(L.Trainer, "fit", watched)
        monkeypatch.setattr(module, "plain_steps_suffice", lambda trainer, plain=plain: plain)
        config = tiny_config(max_epochs=2, batch_size=8, precision="bf16")
        Model(target="label", inputs=["picture", "sound"], config=config).fit(data)
    plain, wrapped = runs[True], runs[False]
    assert plain["losses"] == wrapped["losses"] and len(plain["losses"]) >= 10
    assert plain["global_step"] == wrapped["global_step"] == len(plain["losses"])
    assert plain["wrapped"] == 0 and wrapped["wrapped"] == len(wrapped["losses"])


def test_plain_steps_only_in_one_process_without_a_gradient_scaler():
    import lightning as L
    from lightning.pytorch.plugins.precision import MixedPrecision

    from polymodal.training.module import plain_steps_suffice

    for precision in ("32-true", "bf16-mixed"):
        trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False)
        assert plain_steps_suffice(trainer), precision
    ddp = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    assert not plain_steps_suffice(ddp)
    scaled = L.Trainer(accelerator="cpu", devices=1, logger=False)
    scaled.strategy.precision_plugin = MixedPrecision(
        "16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu")
    )
    assert not plain_steps_suffice(scaled)


def test_bf16_forward_runs_under_autocast_and_the_backward_pass_outside_it(tmp_path, monkeypatch):
    """training_step takes its own optimiser step, inside Lightning's autocast; the backward
    pass and the step leave it (in bf16 the attention fusion's gradients differed when the
    backward pass ran under autocast, which torch advises against)."""
    from polymodal import Model
    from polymodal.training.module import PolymodalModule
    from tests.media import shapes_and_tones, tiny_config

    seen = {"forward": set(), "backward": set()}
    combined_loss, backward = PolymodalModule.combined_loss, PolymodalModule.backward_and_step

    def forward_seen(self, outputs, targets):
        if self.net.training:
            seen["forward"].add(torch.is_autocast_enabled("cpu"))
        return combined_loss(self, outputs, targets)

    def backward_seen(self, loss):
        seen["backward"].add(torch.is_autocast_enabled("cpu"))
        return backward(self, loss)

    monkeypatch.setattr(PolymodalModule, "combined_loss", forward_seen)
    monkeypatch.setattr(PolymodalModule, "backward_and_step", backward_seen)
    data = shapes_and_tones(tmp_path / "data", rows=32)
    config = tiny_config(max_epochs=1, precision="bf16")
    config.model.fusion = "attention"
    Model(target="label", inputs=["picture", "sound"], config=config).fit(data)
    assert seen == {"forward": {True}, "backward": {False}}


def test_an_epoch_is_timed_until_the_next_one_starts():
    """Checkpoints and early stopping run after History's epoch-end hook: an epoch's seconds
    still hold them, and an epoch cut off halfway (max_time) leaves the last row alone."""
    history, trainer = History(), SimpleNamespace(current_epoch=0, callback_metrics={})
    history.on_train_epoch_start(trainer, None)
    history.on_train_epoch_end(trainer, None)
    time.sleep(0.2)  # what callbacks after History do: saving a checkpoint
    trainer.current_epoch = 1
    history.on_train_epoch_start(trainer, None)
    assert history.epochs[0]["seconds"] >= 0.2
    time.sleep(0.1)  # epoch 1 stopped before its end
    history.on_train_end(trainer, None)
    assert len(history.epochs) == 1 and history.epochs[0]["seconds"] < 0.3


def test_compile_trains_the_compiled_module_and_saves_plain_weights(tmp_path, monkeypatch):
    """`--compile`: Lightning fits `torch.compile`'s wrapper (here with the eager backend, so
    the test spends no time generating code) and the saved model is the plain network."""
    import lightning as L
    from torch._dynamo.eval_frame import OptimizedModule

    from polymodal import Model
    from tests.media import shapes_and_tones, tiny_config

    real_compile, fitted = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda module: real_compile(module, backend="eager"))
    fit = L.Trainer.fit

    def watched(trainer, model, *args, **kwargs):
        fitted.append(model)
        return fit(trainer, model, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "fit", watched)
    data = shapes_and_tones(tmp_path / "data", rows=32)
    model = Model(target="label", config=tiny_config(max_epochs=2, compile=True))
    model.fit(data, out=tmp_path / "m")
    assert len(fitted) == 1 and isinstance(fitted[0], OptimizedModule)
    assert len(model.metrics_["history"]) == 2
    loaded = Model.load(tmp_path / "m")
    assert loaded.config.train.compile
    np.testing.assert_array_equal(
        loaded.raw_outputs(data)["label"], model.raw_outputs(data)["label"]
    )


def test_optimiser_steps_do_not_ask_nvml_where_there_is_no_gpu(monkeypatch):
    """Lightning's PYTORCH_NVML_BASED_CUDA_CHECK=1 makes each AdamW step ask NVML for the GPU
    count; inside `cuda_checked_once` a machine without a GPU answers from CUDA's cached count."""
    import lightning  # noqa: F401  (sets the variable, as in any training process)

    from polymodal.training.fit import NVML_CHECK, cuda_checked_once

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the check is left as Lightning sets it")
    monkeypatch.setenv(NVML_CHECK, "1")
    asked = []
    real = torch.cuda._device_count_nvml
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: asked.append(1) or real())
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], foreach=True)

    def step() -> None:
        weight.grad = torch.ones(3)
        optimizer.step()

    step()
    assert asked, "outside the block each step asks NVML"
    with cuda_checked_once():  # asks once, on entering
        asked.clear()
        step()
        step()
    assert not asked
    assert os.environ[NVML_CHECK] == "1", "Lightning's setting is back after the block"


def test_the_last_checkpoint_is_the_final_epochs_even_when_validation_did_not_improve(
    tmp_path, monkeypatch
):
    """`--resume` goes on from the last epoch trained, not from the last one that improved
    (Lightning's `save_last` writes last.ckpt only when it writes another checkpoint)."""
    import polymodal.model
    from polymodal import Model
    from tests.media import shapes_and_tones, tiny_config

    monkeypatch.setattr(polymodal.model, "remove_checkpoints", lambda folder: None)
    data = shapes_and_tones(tmp_path / "data", rows=48)
    config = tiny_config(max_epochs=3, patience=5, lr=0.0)  # the score never moves
    out = tmp_path / "model"
    model = Model(target="label", inputs=["picture"], config=config).fit(data, out=out)
    assert model.metrics_["best_epoch"] == 0
    last = torch.load(out / ".checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and "optimizer_states" in last


@pytest.mark.parametrize("seconds", [0.0, 3600.0])
def test_the_resumable_state_is_written_after_the_first_and_final_epoch_and_when_due(
    tmp_path, monkeypatch, seconds
):
    """last.ckpt after every epoch with `checkpoint_seconds` 0; with an hour, after the first
    epoch and after the one where the budget stopped training (here the fifth of 12)."""
    import polymodal.training.fit as fit
    from polymodal import Model
    from tests.media import shapes_and_tones, tiny_config

    written = []
    save, budget_epoch_end = fit.ResumableState._save_checkpoint, fit.Budget.on_train_epoch_end

    def recorded_save(self, trainer, filepath):
        written.append(trainer.current_epoch)
        save(self, trainer, filepath)

    def stop_at_the_fifth(self, trainer, module):
        budget_epoch_end(self, trainer, module)
        trainer.should_stop = trainer.should_stop or trainer.current_epoch == 4

    monkeypatch.setattr(fit.ResumableState, "_save_checkpoint", recorded_save)
    monkeypatch.setattr(fit.Budget, "on_train_epoch_end", stop_at_the_fifth)
    data = shapes_and_tones(tmp_path / "data", rows=48)
    config = tiny_config(max_epochs=12, patience=20, checkpoint_seconds=seconds)
    model = Model(target="label", inputs=["picture"], config=config).fit(data)
    assert [row["epoch"] for row in model.metrics_["history"]] == [0, 1, 2, 3, 4]
    assert written == ([0, 1, 2, 3, 4] if seconds == 0 else [0, 4])


def test_checkpoints_are_written_on_a_thread_only_where_that_pays(monkeypatch):
    """On the CPU a small network's checkpoints are written in the loop; a large network's
    (or any on a GPU) on Lightning's writer thread."""
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    import polymodal.training.fit as fit

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    net = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 2))  # 132 weights
    assert fit.checkpoint_writer(net) == []
    monkeypatch.setattr(fit, "ASYNC_CHECKPOINTS_FROM_WEIGHTS", 132)
    assert [type(p) for p in fit.checkpoint_writer(net)] == [AsyncCheckpointIO]
    net[0].requires_grad_(False)  # frozen weights are not in the checkpoints
    assert fit.checkpoint_writer(net) == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert [type(p) for p in fit.checkpoint_writer(net)] == [AsyncCheckpointIO]
