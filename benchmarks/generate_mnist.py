"""Label -> digit image on MNIST: does an image target draw the digit it is asked for?

Trains a polymodal classifier on real images (label from image) and a polymodal generator
(image from label), then samples `--per-class` images per digit with `polymodal generate`'s
function and reports, for the generator and for a baseline (the class mean image plus noise):

- conditional accuracy: the share of samples the classifier reads as the digit asked for;
- Fréchet distance between samples and real held-out images in the classifier's feature space
  (`Model.embed`), next to the real-vs-real figure (two halves of held-out real images).

MNIST's 10,000 test images are split into training and held-out rows. A quick check:
    python benchmarks/generate_mnist.py --train-rows 600 --epochs 2 --per-class 10 --steps 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import linalg

from benchmarks.common import DATASETS, machine, read_mnist, require
from polymodal.config import Config, TargetConfig
from polymodal.generate import generate
from polymodal.model import Model


def write_images(folder: Path, images: np.ndarray, labels: np.ndarray, name: str) -> Path:
    (folder / name).mkdir(parents=True, exist_ok=True)
    records = []
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(pixels).save(folder / name / f"{index}.png")
        records.append({"label": str(label), "image": f"{name}/{index}.png"})
    path = folder / f"{name}.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors."""
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def scores(classifier: Model, table: Path, wanted: np.ndarray, real: np.ndarray) -> tuple:
    frame = pd.read_csv(table)[["image"]]
    predicted = classifier.predict(frame.assign(image=[str(table.parent / p) for p in frame.image]))
    accuracy = float((predicted["label_predicted"].astype(str).to_numpy() == wanted).mean())
    features = classifier.embed(str(table))
    return accuracy, frechet(features, real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--guidance", type=float, default=2.0)
    args = parser.parse_args()
    print(machine())
    images, labels = read_mnist(require(DATASETS / "raw" / "mnist"))
    work = Path(tempfile.mkdtemp(prefix="generate-mnist-"))
    n = args.train_rows
    train = write_images(work, images[:n], labels[:n], "train")
    held = write_images(work, images[n:], labels[n:], "held")

    config = Config()
    config.train.max_epochs = args.epochs
    started = time.perf_counter()
    classifier = Model(target="label", inputs=["image"], config=config).fit(str(train))
    print(f"classifier: {time.perf_counter() - started:.0f} s, held-out accuracy "
          f"{classifier.evaluate(str(held))['label']['accuracy']:.3f}")  # fmt: skip

    config.targets = [TargetConfig(column="image", task="image", options={"steps": args.steps})]
    started = time.perf_counter()
    generator = Model(inputs=["label"], config=config).fit(str(train), out=work / "generator")
    print(f"generator: {time.perf_counter() - started:.0f} s, "
          f"{generator.metrics_['parameters']:,} parameters")  # fmt: skip

    wanted = np.repeat(np.arange(10).astype(str), args.per_class)
    conditions = work / "conditions.csv"
    pd.DataFrame({"label": np.arange(10).astype(str)}).to_csv(conditions, index=False)
    started = time.perf_counter()
    made, rows = generate(
        generator, conditions, work / "generated", args.per_class, guidance=args.guidance, seed=0
    )
    print(f"sampling: {rows} images in {time.perf_counter() - started:.1f} s "
          f"({args.steps} steps, guidance {args.guidance})")  # fmt: skip

    held_labels = pd.read_csv(held)["label"].astype(str).to_numpy()
    real = classifier.embed(str(held))
    half = min(len(real) // 2, len(wanted))
    print(
        f"real vs real (two halves of {half}): Fréchet {frechet(real[:half], real[half : 2 * half]):.2f}"
    )
    accuracy, distance = scores(classifier, made, wanted, real)
    print(f"generator: conditional accuracy {accuracy:.3f}, Fréchet {distance:.2f}")

    rng = np.random.default_rng(0)
    train_images, train_labels = images[:n], labels[:n]
    baseline = []
    for digit in wanted.astype(int):
        same = train_images[train_labels == digit].astype(np.float32)
        noisy = same.mean(axis=0) + rng.normal(0, 1, same.shape[1:]) * same.std(axis=0) * 0.5
        baseline.append(np.clip(noisy, 0, 255).astype(np.uint8))
    base = write_images(work, np.stack(baseline), wanted, "baseline")
    accuracy, distance = scores(classifier, base, wanted, real)
    print(f"class mean + noise: conditional accuracy {accuracy:.3f}, Fréchet {distance:.2f}")
    print(f"held-out labels: {len(held_labels)} rows; work folder {work}")


if __name__ == "__main__":
    main()
