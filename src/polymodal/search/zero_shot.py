"""Zero-shot labels: `polymodal predict MODEL data.csv --zero-shot COLUMN`.

A row is scored against each class by the cosine similarity of its `column` vector
(`Model.embed`) to a prototype of the class: the class names put into text templates and
embedded through the model's text input, or the mean vector of a few example rows per class.
No head is trained for the classes, so a new label set costs one embedding pass.

Names compare with rows only where the model put the two columns into one space (a `match`
task, say `image=note`); with any model, prototypes from examples of the scored column itself
give a nearest-centroid classifier. These are functions of a model: the Model never imports
them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from polymodal.data.column import is_missing
from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.data.table import read_table
from polymodal.model import DataLike, Model
from polymodal.search.embeddings import QUERY_KINDS, described

PREDICTED = "zero_shot_predicted"
SCORE = "zero_shot_score_"  # then the class name
TEXT_KINDS = QUERY_KINDS["text"]  # the inputs a typed string fills, as `search --text` has it


# ------------------------------------------------------------------- from names
def class_prototypes_from_names(
    model: Model,
    classes: list[str],
    templates: Sequence[str] = ("{}",),
    text_column: str | None = None,
) -> np.ndarray:
    """[classes, dim] unit vectors: each class name in every template ("a photo of a {}"),
    embedded through the model's text input, the templates averaged. Averaging over several
    phrasings keeps a prototype from hanging on the wording of one."""
    check_classes(classes)
    if not templates:
        raise BadInputError("no template to put the class names in: give at least one")
    column = text_input(model.schema_.kinds, text_column)
    texts = [fill(template, name) for name in classes for template in templates]
    vectors = embed_texts(model, column, texts).reshape(len(classes), len(templates), -1)
    return unit(vectors.mean(axis=1))


def text_input(kinds: dict[str, str], chosen: str | None) -> str:
    """The input class names are embedded through: `chosen`, else the only one a text fills.
    Several and no choice is an error, not a guess."""
    fits = [name for name, kind in kinds.items() if kind in TEXT_KINDS]
    if chosen is None and len(fits) == 1:
        return fits[0]
    if chosen in fits:
        return chosen
    raise BadInputError(no_text_input(kinds, fits, chosen))


def no_text_input(kinds: dict[str, str], fits: list[str], chosen: str | None) -> str:
    """Why no input takes the class names, and what to do instead."""
    if chosen is not None:
        return (
            f"--text-column {chosen!r} is not a text input of the model; "
            f"its inputs: {described(kinds)}"
        )
    if fits:
        return (
            f"several text inputs could embed the class names ({', '.join(fits)}): "
            "choose one with --text-column"
        )
    return (
        f"the model has no text input to embed class names through (its inputs: "
        f"{described(kinds)}); give a few examples per class instead (--examples)"
    )


def fill(template: str, name: str) -> str:
    """The template with the class name in its `{}`; any other brace is the user's mistake."""
    if "{}" not in template:
        raise BadInputError(f"--template {template!r} has no {{}} for the class name")
    try:
        return template.format(name)
    except (IndexError, KeyError, ValueError) as error:
        raise BadInputError(
            f"--template {template!r}: {error!r}; write a literal brace as {{{{ or }}}}"
        ) from None


def embed_texts(model: Model, column: str, texts: list[str]) -> np.ndarray:
    """[texts, dim]: each text in `column`'s source column of one table, embedded at once.
    A text the input cannot read is refused: a category input, say, gives every value it never
    saw one shared "unknown" vector, so such classes would all score alike."""
    source = model.schema_.input(column).source
    log = ProblemLog()
    vectors = model.embed(pd.DataFrame({source: texts}), column=column, log=log)
    found = next((p for p in log.problems if p.column == column), None)
    if found is not None:
        raise BadInputError(
            f"input {column!r}: class name text {texts[found.row]!r}: {found.reason}"
        )
    missing = [text for text, v in zip(texts, vectors, strict=True) if not np.isfinite(v).all()]
    if missing:
        raise BadInputError(f"class name texts {missing} got no vector through input {column!r}")
    return vectors


# ---------------------------------------------------------------- from examples
def class_prototypes_from_examples(
    model: Model, examples: DataLike, label_column: str, column: str
) -> tuple[list[str], np.ndarray]:
    """(sorted class names, [classes, dim] unit vectors): the mean `column` vector of each
    class's example rows. Rows without a label or a vector (missing, undecodable) are skipped;
    a class left with no example has no prototype, which is an error naming it."""
    check_input(model, column)
    table = read_table(examples)
    if label_column not in table.frame.columns:
        columns = ", ".join(map(str, table.frame.columns))
        raise BadInputError(f"{table.name}: no label column {label_column!r} (columns: {columns})")
    vectors = model.embed(table, column=column)
    labels = table.frame[label_column]
    labelled = ~labels.map(is_missing).to_numpy(dtype=bool)
    names = labels[labelled].astype(str).to_numpy()
    classes = sorted(set(names))
    if not classes:
        raise BadInputError(f"{table.name}: no row has a value of {label_column!r}")
    vectors, kept = vectors[labelled], np.isfinite(vectors[labelled]).all(axis=1)
    empty = [name for name in classes if not (kept & (names == name)).any()]
    if empty:
        raise BadInputError(
            f"{table.name}: no example of class {', '.join(map(repr, empty))} has a "
            f"{column!r} value the model can embed"
        )
    means = [vectors[kept & (names == name)].mean(axis=0) for name in classes]
    return classes, unit(np.stack(means))


# ---------------------------------------------------------------------- scoring
def zero_shot(
    model: Model,
    data: DataLike,
    column: str,
    classes: list[str],
    prototypes: np.ndarray,
    log: ProblemLog | None = None,
) -> pd.DataFrame:
    """One row per data row, in order: `zero_shot_predicted` (the class of the most similar
    prototype; None where the row has no `column` vector) and `zero_shot_score_<class>`, the
    cosine similarity to each prototype (NaN for such rows)."""
    check_input(model, column)
    check_classes(classes)
    if prototypes.shape != (len(classes), model.config.model.dim):
        raise BadInputError(
            f"{len(classes)} classes need prototypes of shape "
            f"({len(classes)}, {model.config.model.dim}), not {prototypes.shape}"
        )
    vectors = model.embed(data, column=column, log=log)
    scores = unit(vectors) @ unit(prototypes).T  # NaN rows stay NaN
    known = np.isfinite(scores).all(axis=1)
    best = np.argmax(np.where(known[:, None], scores, 0.0), axis=1)
    predicted = [classes[i] if ok else None for i, ok in zip(best, known, strict=True)]
    frame = pd.DataFrame({PREDICTED: pd.Series(predicted, dtype=object)})
    for i, name in enumerate(classes):
        frame[SCORE + name] = scores[:, i].astype(np.float32)
    return frame


def accuracy(scored: pd.DataFrame, truth: pd.Series) -> tuple[float, int]:
    """(share of rows predicted as their true class, rows counted): rows without a true
    value are not counted; one without a prediction counts as wrong."""
    known = ~truth.map(is_missing).to_numpy(dtype=bool)
    predicted = scored[PREDICTED]
    right = predicted.notna().to_numpy() & (
        predicted.astype(str).to_numpy() == truth.astype(str).to_numpy()
    )
    counted = int(known.sum())
    return (float((right & known).sum()) / counted if counted else float("nan")), counted


def check_input(model: Model, column: str) -> None:
    kinds = model.schema_.kinds
    if column not in kinds:
        raise BadInputError(f"no input named {column!r}; the model's inputs: {described(kinds)}")


def check_classes(classes: list[str]) -> None:
    if not classes:
        raise BadInputError("no class names to score: give at least one (--labels a,b,c)")
    twice = sorted({name for name in classes if classes.count(name) > 1})
    if twice:
        raise BadInputError(f"class names given twice: {', '.join(twice)}")


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero; a NaN row stays NaN)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
