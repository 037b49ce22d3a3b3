"""Captions: 64x64 scenes of coloured digits and shapes, each with a one-line caption.

.venv/bin/python benchmarks/build_captions.py [--train 4000] [--test 500] [--seed 0]
                                              [--workers 2] [--out benchmarks/data/captions]
.venv/bin/python benchmarks/build_captions.py --baseline [--out benchmarks/data/captions]

Why: an image-to-text task that is small, exact and tests compositional generalisation. The
test captions are made of words seen in training, in (colour, object) combinations that never
appear in a training image; a model that learned "red" and "seven" separately can caption a red
seven, a model that memorised whole phrases cannot.

A scene is a black 64x64 RGB image with 1-4 objects (count uniform) at distinct horizontal
positions: the width is cut into 4 columns of 16 pixels, each object takes its own column
(columns drawn at random) at a random height. An object is 16x16: either an MNIST digit (its
central 20x20 scaled to 16x16, tinted: grey level x colour) or a filled shape drawn with PIL
(circle, square, triangle; 11-16 pixels across). Colours: red, green, blue, yellow (pure RGB).

Caption grammar (objects named left to right; `<o>` = "a <colour> <object>", the object being
circle | square | triangle | zero | ... | nine; "a" even before "eight", which never follows it
since the colour comes first):
  1 object:   <o>                      "a green three"
  2 objects:  <o> left of <o>          "a red circle left of a blue seven"
  3-4:        <o> , <o> [, <o>] and <o> "a red circle , a blue seven and a green square"
(the comma is a word of its own).

Held-out combinations: colour index c (red 0, green 1, blue 2, yellow 3) and object index o
(circle 0, square 1, triangle 2, zero 3, ..., nine 12) form a held-out pair when (c + o) % 5 == 0:
10 of the 52 pairs (red circle, red two, red seven, green one, green six, blue zero, blue five,
yellow triangle, yellow four, yellow nine). No training image holds one; every test image holds
at least one (its other objects are drawn from all 52 pairs). MNIST test-set images 0-7999 are
used for training scenes, 8000-9999 for test scenes.

CSV `captions.csv` in `--out`: `image` (images/{split}_{n}.png, relative to the CSV), `caption`,
`objects` (count), `split` (train | test; polymodal draws its validation part from train).
Deterministic given `--seed`.

`--baseline` scores a nearest-neighbour captioner on a built set: each test image gets the
caption of the training image with the highest cosine similarity of raw pixels (downsampled to
32x32), with BLEU-4 (sacrebleu, 0..1), exact match, and CIDEr-D where polymodal has it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import DATASETS, ROOT, read_mnist, require
from PIL import Image, ImageDraw

SIZE = 64
CELL = 16
COLUMNS = SIZE // CELL
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
SHAPES = ("circle", "square", "triangle")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
OBJECTS = SHAPES + DIGITS
PAIRS = [(c, o) for c in range(len(COLOURS)) for o in range(len(OBJECTS))]
HELD_OUT = [(c, o) for c, o in PAIRS if (c + o) % 5 == 0]
SEEN = [pair for pair in PAIRS if pair not in HELD_OUT]
TRAIN_IMAGES = range(0, 8000)
TEST_IMAGES = range(8000, 10000)


def caption(pairs: list[tuple[int, int]]) -> str:
    """The sentence for (colour, object) pairs listed left to right (see the grammar above)."""
    names = list(COLOURS)
    phrases = [f"a {names[c]} {OBJECTS[o]}" for c, o in pairs]
    if len(phrases) == 1:
        return phrases[0]
    if len(phrases) == 2:
        return f"{phrases[0]} left of {phrases[1]}"
    return " , ".join(phrases[:-1]) + f" and {phrases[-1]}"


def draw_pairs(split: str, rng: np.random.Generator) -> list[tuple[int, int]]:
    """1-4 (colour, object) pairs: only seen pairs for train; at least one held-out for test."""
    count = int(rng.integers(1, COLUMNS + 1))
    if split == "train":
        return [SEEN[i] for i in rng.integers(len(SEEN), size=count)]
    pairs = [HELD_OUT[int(rng.integers(len(HELD_OUT)))]]
    pairs += [PAIRS[i] for i in rng.integers(len(PAIRS), size=count - 1)]
    return [pairs[i] for i in rng.permutation(count)]  # the held-out one at any position


def plan(count: int, split: str, rng: np.random.Generator, labels: np.ndarray) -> list[dict]:
    """Draw every scene of a split: objects, columns, heights, MNIST images and shape sizes."""
    pool = np.array(TEST_IMAGES if split == "test" else TRAIN_IMAGES)
    by_digit = {digit: pool[labels[pool] == digit] for digit in range(10)}
    scenes = []
    for number in range(count):
        pairs = draw_pairs(split, rng)
        columns = sorted(int(c) for c in rng.choice(COLUMNS, size=len(pairs), replace=False))
        objects = []
        for (colour, thing), column in zip(pairs, columns, strict=True):
            digit = thing - len(SHAPES)
            objects.append(
                {
                    "colour": colour,
                    "object": thing,
                    "x": column * CELL,
                    "y": int(rng.integers(0, SIZE - CELL + 1)),
                    "mnist": int(rng.choice(by_digit[digit])) if digit >= 0 else -1,
                    "side": int(rng.integers(11, CELL + 1)),
                }
            )
        scenes.append(
            {
                "image": f"images/{split}_{number:05d}.png",
                "caption": caption(pairs),
                "objects": len(pairs),
                "split": split,
                "draw": objects,
            }
        )
    return scenes


def shape(name: str, colour: tuple[int, int, int], side: int) -> Image.Image:
    """A filled circle, square or triangle `side` pixels across, centred in a CELL square."""
    picture = Image.new("RGB", (CELL, CELL))
    low = (CELL - side) // 2
    box = (low, low, low + side - 1, low + side - 1)
    pen = ImageDraw.Draw(picture)
    if name == "circle":
        pen.ellipse(box, fill=colour)
    elif name == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], colour)
    return picture


def digit(image: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    """An MNIST image's central 20x20, scaled to CELL x CELL and tinted with `colour`."""
    grey = Image.fromarray(image[4:24, 4:24]).resize((CELL, CELL), Image.BILINEAR)
    tint = np.asarray(grey, np.float32)[..., None] * np.array(colour, np.float32) / 255
    return Image.fromarray(tint.round().astype(np.uint8))


def render(scene: dict) -> Image.Image:
    """The scene's 64x64 RGB picture."""
    picture = Image.new("RGB", (SIZE, SIZE))
    for item in scene["draw"]:
        colour = list(COLOURS.values())[item["colour"]]
        if item["mnist"] >= 0:
            tile = digit(IMAGES[item["mnist"]], colour)
        else:
            tile = shape(OBJECTS[item["object"]], colour, item["side"])
        picture.paste(tile, (item["x"], item["y"]))
    return picture


def write(task: tuple[dict, Path]) -> int:
    """Render and save one scene; the bytes written."""
    scene, out = task
    path = out / scene["image"]
    render(scene).save(path, optimize=True)
    return path.stat().st_size


def build(args: argparse.Namespace) -> None:
    """Plan, render (in `--workers` processes) and write the CSV; print the totals."""
    global IMAGES  # read by the forked workers
    started = time.perf_counter()
    IMAGES, labels = read_mnist(require(DATASETS / "raw" / "mnist"))
    rng = np.random.default_rng(args.seed)
    scenes = plan(args.train, "train", rng, labels) + plan(args.test, "test", rng, labels)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        written = sum(pool.imap(write, [(s, args.out) for s in scenes], chunksize=64))
    table = pd.DataFrame(
        [{k: s[k] for k in ("image", "caption", "objects", "split")} for s in scenes]
    )
    table.to_csv(args.out / "captions.csv", index=False)
    seconds = time.perf_counter() - started
    counts = table["split"].value_counts().to_dict()
    print(
        f"wrote {args.out / 'captions.csv'}: {len(table)} rows ({counts}), {seconds:.1f} s, {written / 2**20:.1f} MB"
    )
    names = list(COLOURS)
    print("held-out pairs: " + ", ".join(f"{names[c]} {OBJECTS[o]}" for c, o in HELD_OUT))
    train = set(table.loc[table["split"] == "train", "caption"])
    test = table.loc[table["split"] == "test", "caption"]
    print(f"test captions also in train: {test.isin(train).sum()} of {len(test)}")


def pixels(csv: Path, images: pd.Series) -> np.ndarray:
    """Images downsampled to 32x32, flattened and scaled to unit length (for cosine)."""
    rows = [
        np.asarray(Image.open(csv.parent / path).convert("RGB").resize((32, 32), Image.BOX))
        for path in images
    ]
    flat = np.stack(rows).reshape(len(rows), -1).astype(np.float32)
    return flat / (np.linalg.norm(flat, axis=1, keepdims=True) + 1e-8)


def nearest_neighbour_baseline(csv: Path) -> dict:
    """Caption each test image with its nearest training image's caption (cosine of raw pixels
    at 32x32); BLEU-4 (0..1), exact match and, where polymodal has it, CIDEr-D."""
    import sacrebleu

    table = pd.read_csv(csv)
    train = table[table["split"] == "train"].reset_index(drop=True)
    test = table[table["split"] == "test"].reset_index(drop=True)
    train_pixels, test_pixels = pixels(csv, train["image"]), pixels(csv, test["image"])
    nearest = np.concatenate(
        [(part @ train_pixels.T).argmax(axis=1) for part in np.array_split(test_pixels, 8)]
    )
    hypotheses = train["caption"].iloc[nearest].tolist()
    references = test["caption"].tolist()
    result = {
        "test_rows": len(test),
        "bleu4": sacrebleu.corpus_bleu(hypotheses, [references]).score / 100,
        "exact_match": float(
            np.mean([h == r for h, r in zip(hypotheses, references, strict=True)])
        ),
        "cider_d": cider_d([[r] for r in references], hypotheses),
    }
    return result


def cider_d(references: list[list[str]], hypotheses: list[str]) -> float | None:
    """polymodal's CIDEr-D, imported lazily; None (with a message) where it is not there yet."""
    sys.path.insert(0, str(ROOT / "src"))
    try:
        from polymodal.tasks.text.metrics import cider_d as metric
    except ImportError as error:
        print(f"CIDEr-D skipped: polymodal.tasks.text.metrics.cider_d is not available ({error})")
        return None
    return float(metric(references, hypotheses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data" / "captions")
    parser.add_argument("--baseline", action="store_true", help="score the nearest neighbour")
    args = parser.parse_args()
    if args.baseline:
        started = time.perf_counter()
        result = nearest_neighbour_baseline(require(args.out / "captions.csv"))
        cider = f"{result['cider_d']:.3f}" if result["cider_d"] is not None else "n/a"
        print(
            f"nearest-neighbour captions (cosine, raw pixels 32x32), {result['test_rows']} test "
            f"images: BLEU-4 {result['bleu4']:.3f}, exact match {result['exact_match']:.3f}, "
            f"CIDEr-D {cider} ({time.perf_counter() - started:.1f} s)"
        )
    else:
        build(args)


IMAGES = np.empty((0, 28, 28), np.uint8)  # MNIST, filled by build before the workers fork

if __name__ == "__main__":
    main()
