"""MNIST generation: does an image target draw what it is asked, and are its pictures worth
training on?

Data: MNIST's 10,000 test images (../shared/datasets/raw/mnist), split as AV-MNIST splits them
(9,000 train / 1,000 test: AV-MNIST's `images/NNNNN.png` is MNIST test image NNNNN, degraded;
here the clean image is used). Every figure is taken on the 1,000 test rows, which no model saw.

- judge: a polymodal classifier (image → label) trained on the clean training images. Its
  predictions give the conditional accuracy (the share of samples read as the digit asked
  for); its embedding (`Model.embed`) is the feature space of the Fréchet distance and of
  precision / recall (Kynkäänniemi et al. 2019, k = 3): no Inception weights can be fetched.
- `label`: a generator label → image (the image task: rectified flow, U-Net cross-attending to
  the fused inputs); `--per-class` samples per digit against the test images. Real vs real is
  the training images against the test images, as many of each. Baseline: the class's mean
  image plus noise.
- `audio`: "draw what you hear": a generator AV-MNIST recording → clean image (with the label
  as a second target while training, so the audio encoder learns the digits; the samples are
  drawn from the recording alone); one sample per test recording, judged against the
  recording's digit, next to the accuracy of an audio-only classifier on the same recordings
  (goal: at least 0.9× it). Baseline: the mean image of the class the audio classifier hears,
  plus noise.
- `synthetic`: a classifier trained on 1,000 real training images, against the same 1,000 plus
  `--synthetic` images from the label generator (an equal share per digit). The generator
  learned from all 9,000 training images, so the synthetic images carry what those hold.

A quick check:
    python benchmarks/generate_mnist.py --epochs 1 --train-rows 900 --per-class 5 --steps 4 \
        --synthetic 100 --parts label audio synthetic
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import linalg

from benchmarks.common import DATASETS, machine, read_mnist, require
from polymodal.config import ColumnConfig, Config, TargetConfig
from polymodal.generate import generate
from polymodal.model import Model

AVMNIST = DATASETS / "avmnist"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_images(folder: Path, name: str, images: np.ndarray, **columns: object) -> Path:
    """PNGs under folder/name and folder/name.csv with an `image` column (paths relative to
    the table) plus `columns`; kept if folder/name.csv exists (it is written last), so that a
    rerun, or a second part run at the same time on the same `--work`, reads the same files."""
    path = folder / f"{name}.csv"
    if path.is_file():
        return path
    (folder / name).mkdir(parents=True, exist_ok=True)
    paths = []
    for index, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / name / f"{index}.png")
        paths.append(f"{name}/{index}.png")
    pd.DataFrame({"image": paths, **columns}).to_csv(path, index=False)
    return path


def read_pixels(table: Path, column: str = "image") -> np.ndarray:
    frame = pd.read_csv(table)
    return np.stack([np.asarray(Image.open(table.parent / p)) for p in frame[column]])


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors."""
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def precision_recall(real: np.ndarray, made: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al. (2019): precision is the share of generated samples inside some
    real sample's k-nearest-neighbour ball; recall the share of real ones inside some
    generated sample's ball."""

    def radii(points: torch.Tensor) -> torch.Tensor:
        return torch.cdist(points, points).kthvalue(k + 1, dim=1).values  # +1: itself

    real_t, made_t = torch.from_numpy(real).double(), torch.from_numpy(made).double()
    between = torch.cdist(made_t, real_t)  # [made, real]
    precision = (between <= radii(real_t)[None]).any(dim=1).float().mean()
    recall = (between.T <= radii(made_t)[None]).any(dim=1).float().mean()
    return float(precision), float(recall)


def judged(judge: Model, table: Path, wanted: np.ndarray, real: np.ndarray) -> dict:
    """Conditional accuracy, Fréchet distance and precision / recall of a table of images."""
    frame = pd.read_csv(table)[["image"]]
    frame["image"] = [str(table.parent / p) for p in frame.image]
    predicted = judge.predict(frame)["label_predicted"].astype(str).to_numpy()
    features = judge.embed(frame)
    precision, recall = precision_recall(real, features)
    return {
        "accuracy": float((predicted == wanted.astype(str)).mean()),
        "frechet": frechet(features, real),
        "precision": precision,
        "recall": recall,
    }


def noisy_means(images: np.ndarray, labels: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The baseline: each wanted digit's mean training image plus Gaussian noise scaled by
    half the per-pixel standard deviation."""
    rng = np.random.default_rng(0)
    out = []
    for digit in wanted.astype(int):
        same = images[labels == digit].astype(np.float32)
        noisy = same.mean(axis=0) + rng.normal(0, 1, same.shape[1:]) * same.std(axis=0) * 0.5
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return np.stack(out)


def row(name: str, figures: dict, seconds: str = "") -> str:
    return (
        f"| {name} | {figures['accuracy']:.3f} | {figures['frechet']:.2f} | "
        f"{figures['precision']:.3f} | {figures['recall']:.3f} | {seconds} |"
    )


def config_for(epochs: int | None, label_kind: bool = False) -> Config:
    config = Config()
    if epochs:
        config.train.max_epochs = epochs
    if label_kind:
        config.columns = {"label": ColumnConfig(kind="category")}
    return config


def trained(config: Config, table: Path, out: Path, **model: object) -> tuple[Model, float]:
    """A model fitted into `out`, or the one already there (a rerun with the same `--work`
    keeps what it trained; delete a model's folder to train it again)."""
    if (out / "config.json").is_file():
        say(f"reusing the model in {out}")
        return Model.load(out), float(
            json.loads((out / "metrics.json").read_text())["train_seconds"]
        )
    started = time.perf_counter()
    fitted = Model(config=config, **model).fit(str(table), out=out)
    return fitted, time.perf_counter() - started


def image_target(args: argparse.Namespace, label_too: bool = False) -> Config:
    """The generator's config; `label_too`: the label is a second target (never an input), so
    the inputs' encoders also learn to tell the digits apart."""
    config = config_for(args.epochs, label_kind=True)
    options = {"steps": args.steps, "guidance": args.guidance[0]}
    config.targets = [TargetConfig(column="image", task="image", options=options)]
    if label_too:
        config.targets.append(TargetConfig(column="label", task="multiclass"))
    return config


def sampled(
    generator: Model,
    conditions: pd.DataFrame,
    out: Path,
    sampling: tuple[int, float],
    samples: int = 1,
) -> Path:
    """`samples` images per conditions row, at `sampling` (steps, guidance), seed 0."""
    out.parent.mkdir(parents=True, exist_ok=True)
    table = out.parent / f"{out.name}-conditions.csv"
    conditions.to_csv(table, index=False)
    started = time.perf_counter()
    steps, guidance = sampling
    made, rows = generate(generator, table, out, samples, seed=0, steps=steps, guidance=guidance)
    seconds = time.perf_counter() - started
    say(
        f"sampled {rows} images in {seconds:.0f} s ({rows / seconds:.1f} images/s, "
        f"{steps} steps, guidance {guidance})"
    )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["label", "audio", "synthetic"])
    parser.add_argument("--train-rows", type=int, default=9000, help="of the 9,000")
    parser.add_argument("--epochs", type=int, default=None, help="generators' cap (None: 60)")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument(
        "--guidance", type=float, nargs="+", default=[2.0], help="one row per value"
    )
    parser.add_argument("--synthetic", type=int, default=9000)
    parser.add_argument("--synthetic-steps", type=int, default=16, help="sampling cost: steps")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    print(machine())
    images, labels = read_mnist(require(DATASETS / "raw" / "mnist"))
    avmnist = pd.read_csv(require(AVMNIST / "avmnist.csv"))
    avmnist["index"] = avmnist.image.str.extract(r"(\d+)").astype(int)[0]
    avmnist["audio"] = [str(AVMNIST / p) for p in avmnist.audio]
    train_rows = avmnist[avmnist.split == "train"].head(args.train_rows)
    test_rows = avmnist[avmnist.split == "test"]
    work = args.work or Path(tempfile.mkdtemp(prefix="generate-mnist-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"work folder {work}; {len(train_rows)} training rows, {len(test_rows)} test rows")

    train_images, train_labels = images[train_rows["index"]], labels[train_rows["index"]]
    test_images, test_labels = images[test_rows["index"]], labels[test_rows["index"]]
    common = {"label": train_labels.astype(str), "audio": train_rows.audio.to_numpy()}
    train = write_images(work, "train", train_images, **common)
    test = write_images(
        work, "test", test_images, label=test_labels.astype(str), audio=test_rows.audio.to_numpy()
    )

    judge, seconds = trained(
        config_for(None), train, work / "judge", target="label", inputs=["image"]
    )
    judge_accuracy = judge.evaluate(str(test))["label"]["accuracy"]
    say(f"judge: {seconds:.0f} s, test accuracy {judge_accuracy:.3f}")
    real = judge.embed(str(test))
    real_train = judge.embed(str(train))[: len(real)]
    print("\n| images | conditional accuracy | Fréchet | precision | recall | train s |")
    print("| --- | --- | --- | --- | --- | --- |")
    precision, recall = precision_recall(real, real_train)
    print(
        f"| real: {len(real_train)} training vs {len(real)} test images | {judge_accuracy:.3f} "
        f"(judge on test) | {frechet(real_train, real):.2f} | {precision:.3f} | {recall:.3f} | |"
    )

    label_generator = None
    if {"label", "synthetic"} & set(args.parts):
        label_generator, seconds = trained(
            image_target(args), train, work / "label-gen", inputs=["label"]
        )
        epochs = len(label_generator.metrics_["history"])
        say(f"label generator: {seconds:.0f} s, {epochs} epochs")
    if "label" in args.parts:
        wanted = np.repeat(np.arange(10), args.per_class).astype(str)
        conditions = pd.DataFrame({"label": np.arange(10).astype(str)})
        train_s = f"{seconds:.0f} ({epochs} epochs)"
        for guidance in args.guidance:
            made = sampled(
                label_generator,
                conditions,
                work / f"label-samples-g{guidance:g}",
                (args.steps, guidance),
                args.per_class,
            )
            print(row(f"label → image, {args.steps} steps, guidance {guidance:g}",
                      judged(judge, made, wanted, real), train_s))  # fmt: skip
        base = noisy_means(train_images, train_labels, wanted)
        print(row("label → class mean + noise (baseline)",
                  judged(judge, write_images(work, "label-baseline", base), wanted, real)))  # fmt: skip

    if "audio" in args.parts:
        audio_classifier, seconds = trained(
            config_for(None), train, work / "audio-clf", target="label", inputs=["audio"]
        )
        heard = audio_classifier.predict(str(test))["label_predicted"].astype(str).to_numpy()
        audio_accuracy = float((heard == test_labels.astype(str)).mean())
        say(f"audio classifier: {seconds:.0f} s, test accuracy {audio_accuracy:.3f}")
        generator, seconds = trained(
            image_target(args, label_too=True), train, work / "audio-gen", inputs=["audio"]
        )
        epochs = len(generator.metrics_["history"])
        recordings = pd.DataFrame({"audio": test_rows.audio.to_numpy()})
        wanted = test_labels.astype(str)
        for guidance in args.guidance:
            made = sampled(
                generator, recordings, work / f"audio-samples-g{guidance:g}", (args.steps, guidance)
            )
            print(row(f"audio → image, {args.steps} steps, guidance {guidance:g}",
                      judged(judge, made, wanted, real), f"{seconds:.0f} ({epochs} epochs)"))  # fmt: skip
        base = noisy_means(train_images, train_labels, heard)
        print(row("audio → class the audio classifier hears, its mean + noise (baseline)",
                  judged(judge, write_images(work, "audio-baseline", base), wanted, real)))  # fmt: skip
        print(f"audio-only classifier on the same recordings: accuracy {audio_accuracy:.3f} "
              f"(0.9× = {0.9 * audio_accuracy:.3f})")  # fmt: skip

    if "synthetic" in args.parts:
        few = write_images(work, "few", train_images[:1000], label=train_labels[:1000].astype(str))
        per_digit = args.synthetic // 10
        conditions = pd.DataFrame({"label": np.arange(10).astype(str)})
        synthetic_sampling = (args.synthetic_steps, args.guidance[0])
        made = sampled(
            label_generator, conditions, work / "synthetic", synthetic_sampling, per_digit
        )
        generated = pd.read_csv(made)
        generated["image"] = [str(made.parent / p) for p in generated.image]
        few_frame = pd.read_csv(few)
        few_frame["image"] = [str(few.parent / p) for p in few_frame.image]
        mixed = work / "few-plus-synthetic.csv"
        pd.concat([few_frame, generated[["image", "label"]]]).to_csv(mixed, index=False)
        print("\n| classifier trained on | test accuracy | train s |")
        print("| --- | --- | --- |")
        for name, table in (
            ("1,000 real", few),
            (f"1,000 real + {len(generated):,} generated", mixed),
        ):
            model, seconds = trained(
                config_for(None),
                table,
                work / f"clf-{table.stem}",
                target="label",
                inputs=["image"],
            )
            accuracy = model.evaluate(str(test))["label"]["accuracy"]
            print(f"| {name} | {accuracy:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
