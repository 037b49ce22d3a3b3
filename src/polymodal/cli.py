"""The `polymodal` command line: train, predict, evaluate, inspect, generate, demo, list,
embed, index, search, explain, report, serve."""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from polymodal import options as opt
from polymodal.config import ConfigError
from polymodal.options import split_list
from polymodal.terminal import (
    console,
    out,
    print_comparison,
    print_metrics,
    print_problems,
    print_target_metrics,
    quiet_libraries,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train, evaluate and use multimodal models over tables of text, images, audio, "
    "video, numbers and categories.",
)


def friendly_errors(command: Any) -> Any:
    """Bad input ends the command with one line naming what is wrong, not a traceback."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from polymodal.data.problems import BadInputError
        from polymodal.training.distributed import TrainingStopped

        quiet_libraries()
        try:
            return command(*args, **kwargs)
        except (BadInputError, ConfigError, KeyError, FileExistsError, TrainingStopped) as error:
            message = error.args[0] if error.args else str(error)
            # escaped: a `[...]` in the message (a path, `polymodal[scale]`) is text, not markup
            console.print(
                f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(1 if isinstance(error, TrainingStopped) else 2) from None

    return run


def fresh_output(data: Path, targets: list[str]) -> Path:
    """runs/<table>-<target>, with -2, -3, ... so an earlier run is never overwritten."""
    base = Path("runs") / f"{data.stem}-{'-'.join(targets)}"
    candidate, number = base, 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{number}")
        number += 1
    return candidate


@app.command()
@friendly_errors
def train(
    data: Annotated[
        Path, typer.Argument(help="table (CSV, Parquet, JSONL) or a folder made by `prepare`")
    ],
    target: Annotated[
        str | None,
        typer.Option(help="target column(s), comma-separated (not for a prepared folder)"),
    ] = None,
    match: opt.Match = None,
    positive_by: opt.PositiveBy = None,
    anchor: opt.Anchor = None,
    config: opt.ConfigFile = None,
    inputs: opt.Inputs = None,
    fusion: opt.Fusion = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="model folder")] = None,
    valid: Annotated[Path | None, typer.Option(help="separate validation table")] = None,
    epochs: opt.Epochs = None,
    max_time: opt.MaxTime = None,
    seed: opt.Seed = None,
    modality_dropout: opt.ModalityDropout = None,
    strict: opt.Strict = None,
    augment: opt.Augment = None,
    workers: opt.Workers = None,
    compile: opt.Compile = None,
    devices: opt.Devices = None,
    num_nodes: opt.NumNodes = None,
    strategy: opt.Strategy = None,
    engine: opt.TrainEngine = opt.Engine.local,
    address: opt.Address = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing model folder")] = False,
    resume: Annotated[
        bool, typer.Option(help="continue from the folder's last checkpoint")
    ] = False,
    report: Annotated[
        bool, typer.Option(help="write report.html (no robustness sweeps: see `report`)")
    ] = True,
    encoder: opt.Encoder = None,
    encoder_mode: opt.EncoderMode = None,
    decoder: opt.Decoder = None,
    preset: opt.Preset = None,
    gradient_checkpointing: opt.GradientCheckpointing = None,
) -> None:
    """Train a model and write its folder (weights, config, metrics, report.html).
    --engine ray trains on --devices Ray Train workers of a Ray cluster (--address)."""
    settings = opt.settings_from(config, locals())
    if engine is opt.Engine.local and address is not None:
        raise ConfigError("--address is for --engine ray")
    targets = [t.column for t in settings.targets]
    prepared = data.is_dir()  # a folder written by `polymodal prepare`
    if not prepared:
        check_pretrained_sources(settings, data, targets)

    from polymodal.model import Model
    from polymodal.training.distributed import process_rank

    folder = out_dir or fresh_output(data, targets or ["prepared"])
    if engine is opt.Engine.ray:
        from polymodal.training.ray_train import fit_on_ray

        run = fit_on_ray(
            settings, data, folder, valid=valid, address=address, overwrite=overwrite,
            resume=resume,
        )  # fmt: skip
        model = run.model
        nodes = len({worker["node"] for worker in run.workers})
        wrote = ", ".join(str(worker["rank"]) for worker in run.workers if worker["wrote"])
        out.print(
            f"trained by {len(run.workers)} Ray Train workers on {nodes} node(s); "
            f"worker {wrote} wrote the model"
        )
    else:
        model = Model(config=settings)  # a prepared folder: its data settings, these for training
        model.fit(data, valid=valid, out=folder, overwrite=overwrite, resume=resume)
        if process_rank(settings.train) != 0:
            return  # another process of a DDP run: rank 0 reports and saves
    print_metrics(model.metrics_)
    print_problems(model.metrics_.get("problems", []))
    out.print(f"model saved to [bold]{folder}[/]")
    if report and not prepared:  # the report reads the table's files
        from polymodal.explain.report import training_report

        try:
            path = training_report(model, folder, data, valid)
        except Exception as error:  # the model is saved; a report problem must not fail the run
            reason = f"{type(error).__name__}: {error}"
            console.print(f"[yellow]warning:[/] report not written: {reason}")
        else:
            out.print(f"report written to [bold]{path}[/]")


@app.command()
@friendly_errors
def prepare(
    data: Annotated[Path, typer.Argument(help="table: CSV, Parquet or JSONL")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the prepared data")],
    target: opt.OptionalTarget = None,
    match: opt.Match = None,
    positive_by: opt.PositiveBy = None,
    anchor: opt.Anchor = None,
    config: opt.ConfigFile = None,
    inputs: opt.Inputs = None,
    valid: Annotated[Path | None, typer.Option(help="separate validation table")] = None,
    seed: opt.Seed = None,
    strict: opt.Strict = None,
    workers: opt.Workers = None,
    encoder: opt.Encoder = None,
    encoder_mode: opt.EncoderMode = None,
    decoder: opt.Decoder = None,
    preset: opt.Preset = None,
) -> None:
    """Everything before training, written to a folder: the split, the fitted schema, decoded
    features and frozen encoders' embeddings. `polymodal train FOLDER` trains from it in any
    process, without decoding a file again."""
    settings = opt.settings_from(config, locals())
    check_pretrained_sources(settings, data, [t.column for t in settings.targets])

    from polymodal.model import Model

    Model(config=settings).prepare(data, out_dir, valid=valid)
    out.print(f"prepared data written to [bold]{out_dir}[/]; train with: polymodal train {out_dir}")


def check_pretrained_sources(settings: Any, data: Path, targets: list[str]) -> None:
    """Find the pretrained sources the table's columns use before torch loads, so one that
    is unavailable fails within seconds with its one-line message."""
    if not settings.model.encoders:
        return
    from polymodal.data.schema import resolve_inputs
    from polymodal.data.table import read_table
    from polymodal.hub import resolve_source

    for column, kind in resolve_inputs(read_table(data), settings, targets).items():
        choice = settings.model.encoder_choice(column, kind)
        if choice and choice.pretrained:
            resolve_source(choice.source, column)


@app.command()
@friendly_errors
def predict(
    model_dir: Annotated[Path, typer.Argument(help="model folder")],
    data: Annotated[Path, typer.Argument(help="table to predict: CSV, Parquet or JSONL")],
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV to write")] = Path(
        "predictions.csv"
    ),
    chunk_size: Annotated[
        int, typer.Option(min=1, help="rows read, predicted and written at a time")
    ] = 1000,
    resume: Annotated[
        bool, typer.Option(help="continue an interrupted run: keep the rows already written")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing output file")] = False,
    engine: opt.EngineOption = opt.Engine.local,
    address: opt.Address = None,
    workers: opt.RayWorkers = None,
    beam: opt.Beam = None,
    nbest: opt.NBest = None,
    length_penalty: opt.LengthPenalty = None,
    max_length: opt.MaxLength = None,
    guidance: opt.Guidance = None,
    steps: opt.Steps = None,
    seed: opt.Seed = None,
    image_dir: Annotated[
        Path | None,
        typer.Option(help="image targets: folder for the PNGs (default: <output>_images/)"),
    ] = None,
    temperature: opt.Temperature = None,
    top_k: opt.TopK = None,
    opening: opt.Opening = None,
    music_dir: Annotated[
        Path | None,
        typer.Option(help="music targets: folder for the MIDI and WAV (default: <output>_music/)"),
    ] = None,
    zero_shot: Annotated[
        str | None,
        typer.Option(help="label each row by the similarity of this column to each class"),
    ] = None,
    labels: Annotated[
        str | None, typer.Option(help="--zero-shot: class names, comma-separated")
    ] = None,
    template: Annotated[
        list[str] | None,
        typer.Option(help="--zero-shot --labels: text around a class name, e.g. 'a photo of a {}'"),
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="--zero-shot --labels: the text input to embed names by")
    ] = None,
    examples: Annotated[
        Path | None, typer.Option(help="--zero-shot: a table of labelled example rows")
    ] = None,
    example_label: Annotated[
        str, typer.Option(help="--examples: the column holding each example's class")
    ] = "label",
    example_column: Annotated[
        str | None, typer.Option(help="--examples: the input embedded (default: --zero-shot)")
    ] = None,
    truth: Annotated[
        str | None, typer.Option(help="--zero-shot: print accuracy against this column")
    ] = None,
) -> None:
    """Predict every row of a table in chunks; writes predictions and class probabilities
    (text targets: the text, its log-probability and, with --nbest, the n best; image targets:
    a PNG per row, its path relative to the output's folder; music targets: a MIDI file per
    row, and its WAV where FluidSynth is installed).

    --zero-shot COLUMN instead scores each row against classes named by --labels (embedded
    through the text input, in each --template) or shown by --examples (their mean vector).

    --engine ray predicts the chunks on a Ray cluster: the same file, byte for byte."""
    from polymodal.data.problems import BadInputError
    from polymodal.model import Model
    from polymodal.serving.batch import predict_to_csv

    zero_shot_options = (labels, template, text_column, examples, example_column, truth)
    if zero_shot is None and any(value is not None for value in zero_shot_options):
        raise BadInputError(
            "--labels, --template, --text-column, --examples, --example-column and --truth "
            "need --zero-shot"
        )
    opt.check_engine(engine, address, workers)
    if engine is opt.Engine.ray and zero_shot is not None:
        raise BadInputError("--zero-shot scores the whole table at once: not with --engine ray")
    if output.exists() and not (overwrite or resume):
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it or --resume")
    if zero_shot is not None:
        names = None if labels is None else split_list(labels) or []  # "": no class, an error
        predict_zero_shot(
            model_dir, data, output, zero_shot, resume=resume, truth=truth,
            labels=names, templates=template or ["{}"], text_column=text_column,
            examples=examples, label_column=example_label,
            example_column=example_column or zero_shot,
        )  # fmt: skip
        return
    model = Model.load(model_dir)
    decoding = opt.decoding(
        beam, nbest, length_penalty, max_length, guidance, steps, seed,
        temperature=temperature, top_k=top_k, opening=opening,
    )  # fmt: skip
    decoding |= file_output(model, output, {"image_dir": image_dir, "music_dir": music_dir})
    if engine is opt.Engine.ray:
        from polymodal.serving.ray_batch import predict_on_ray

        result = predict_on_ray(
            model_dir, data, output, chunk_size=chunk_size, resume=resume, overwrite=overwrite,
            address=address, workers=workers, decoding=decoding, console=console,
        )  # fmt: skip
    else:
        model.set_decoding(**decoding)
        result = predict_to_csv(
            model, data, output, chunk_size=chunk_size, resume=resume, overwrite=overwrite,
            console=console,
        )  # fmt: skip
    print_problems([vars(p) for p in result.problems])
    kept = f" ({result.skipped} already there)" if result.skipped else ""
    out.print(f"{result.written} predictions written to [bold]{output}[/]{kept}")


def file_output(model: Any, output: Path, folders: dict[str, Path | None]) -> dict[str, str]:
    """Where a model with generated files (image, music targets) writes them (`--image-dir`,
    `--music-dir`, else a folder beside the output CSV), and what their paths in the CSV are
    relative to."""
    from polymodal.data.problems import BadInputError
    from polymodal.generate import FILE_FOLDERS

    takes, settings = model.decoding_settings(), {}
    for setting, folder in folders.items():
        if setting not in takes:
            if folder is not None:
                option = "--" + setting.replace("_", "-")
                raise BadInputError(f"{option}: this model generates no such files")
            continue
        folder = folder or output.parent / f"{output.stem}_{FILE_FOLDERS[setting]}"
        settings[setting] = str(folder.resolve())
    return settings | ({"relative_to": str(output.parent.resolve())} if settings else {})


def predict_zero_shot(
    model_dir: Path,
    data: Path,
    output: Path,
    column: str,
    *,
    resume: bool,
    truth: str | None,
    labels: list[str] | None,
    templates: list[str],
    text_column: str | None,
    examples: Path | None,
    label_column: str,
    example_column: str,
) -> None:
    """`predict --zero-shot`: the whole table scored at once (no chunks, so no --resume)
    against prototypes from class names or from examples; the checks that need no model
    come before loading it."""
    from polymodal.data.problems import BadInputError, ProblemLog
    from polymodal.data.table import read_table
    from polymodal.model import Model
    from polymodal.search import zero_shot as zs

    if resume:
        raise BadInputError("--resume is for chunked predictions, not --zero-shot")
    if (labels is None) == (examples is None):
        raise BadInputError("--zero-shot needs exactly one of --labels a,b,c or --examples TABLE")
    table = read_table(data)
    if truth is not None and truth not in table.frame.columns:
        columns = ", ".join(map(str, table.frame.columns))
        raise BadInputError(f"{data}: no --truth column {truth!r} (columns: {columns})")
    model = Model.load(model_dir)
    zs.check_input(model, column)  # before the class names or examples are embedded
    if labels is not None:
        prototypes = zs.class_prototypes_from_names(model, labels, templates, text_column)
    else:
        labels, prototypes = zs.class_prototypes_from_examples(
            model, examples, label_column, example_column
        )
    log = ProblemLog(table=str(data))
    scored = zs.zero_shot(model, table, column, labels, prototypes, log)
    scored.insert(0, "row", range(len(scored)))
    scored.to_csv(output, index=False)
    print_problems([vars(p) for p in log.problems])
    out.print(f"{len(scored)} zero-shot labels written to [bold]{output}[/]")
    if truth is not None:
        share, counted = zs.accuracy(scored, table.frame[truth])
        out.print(f"accuracy against {truth!r}: {share:.3f} ({counted} rows)")


@app.command()
@friendly_errors
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="model folder")],
    data: Annotated[Path, typer.Argument(help="table with the target column(s)")],
    json_out: Annotated[Path | None, typer.Option("--json", help="also write JSON")] = None,
    robustness: Annotated[
        bool, typer.Option(help="metric with inputs removed, under noise and attacks")
    ] = False,
    adversarial: Annotated[bool, typer.Option(help="with --robustness: FGSM and PGD")] = True,
    group_by: Annotated[
        list[str] | None, typer.Option(help="metric per group of this column (repeatable)")
    ] = None,
    beam: opt.Beam = None,
    length_penalty: opt.LengthPenalty = None,
    max_length: opt.MaxLength = None,
) -> None:
    """Metrics on a labelled table: accuracy, F1, confusion matrix; RMSE, MAE, R²; WER, CER,
    BLEU-4, chrF, CIDEr-D.

    --robustness and --group-by add their results under each target in the JSON."""
    from polymodal.data.problems import BadInputError, ProblemLog
    from polymodal.model import Model

    model = Model.load(model_dir)
    model.set_decoding(**opt.decoding(beam, None, length_penalty, max_length))
    log = ProblemLog(table=str(data))
    report = model.evaluate(data, log)
    unscorable = [name for name, values in report.items() if not values.get("rows")]
    if unscorable:
        raise BadInputError(
            f"{data}: no row has a value of target {', '.join(unscorable)} the model can "
            "score (missing, or a class never seen in training)"
        )
    print_target_metrics("evaluation", report)
    print_problems([vars(p) for p in log.problems])
    if robustness or group_by:
        add_stress_tests(model, data, report, robustness, adversarial, group_by or [])
    if json_out:
        json_out.write_text(json.dumps(report, indent=1))


@app.command()
@friendly_errors
def inspect(data: Annotated[Path, typer.Argument(help="table to describe")]) -> None:
    """Show each column's inferred kind with counts, missing values and an example."""
    from polymodal.data.schema import describe_columns
    from polymodal.data.table import read_table

    table = read_table(data)
    view = RichTable(title=f"{data} — {len(table)} rows")
    for header in ("column", "kind", "present", "missing", "unique", "example", "why"):
        view.add_column(header)
    for info in describe_columns(table):
        view.add_row(
            info.name, info.kind, str(info.present), str(info.missing), str(info.unique),
            info.example, info.reason,
        )  # fmt: skip
    out.print(view)
    from polymodal.tasks import generated_counts

    for column, found in generated_counts(table).items():
        for task, count in found.items():
            out.print(f"{column}: {count} of {len(table)} rows point at generated {task} files")


@app.command()
@friendly_errors
def generate(
    model_dir: Annotated[Path, typer.Argument(help="model folder (with an image or music target)")],
    data: Annotated[Path, typer.Argument(help="table of conditions: the model's inputs")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the files and table")],
    samples: Annotated[int, typer.Option("-n", "--samples", help="samples per row")] = 1,
    guidance: opt.Guidance = None,
    steps: opt.Steps = None,
    seed: opt.Seed = None,
    temperature: opt.Temperature = None,
    top_k: opt.TopK = None,
) -> None:
    """Sample generated images or music for each row of a table: PNGs under OUT/images, MIDI
    under OUT/music, and OUT/generated.csv, a table in the training table's schema
    (appendable to it)."""
    from polymodal.generate import generate as generate_table
    from polymodal.model import Model

    model = Model.load(model_dir)
    path, rows = generate_table(
        model, data, out_dir, samples, guidance=guidance, steps=steps, seed=seed,
        temperature=temperature, top_k=top_k,
    )  # fmt: skip
    out.print(f"{rows} generated rows written to [bold]{path}[/]")


@app.command()
@friendly_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for data and model")] = Path(
        "demo_out"
    ),
    rows: Annotated[int | None, typer.Option(help="rows to generate (1600)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing demo folder")] = False,
) -> None:
    """Generate an offline multimodal data set, train on it, and show what to try next."""
    from polymodal.demo import DEMO_ROWS, run_demo

    run_demo(out_dir, rows=rows or DEMO_ROWS, overwrite=overwrite, printer=out)


@app.command()
@friendly_errors
def compare(
    data: Annotated[Path, typer.Argument(help="table: CSV, Parquet or JSONL")],
    target: opt.OptionalTarget = None,
    match: opt.Match = None,
    positive_by: opt.PositiveBy = None,
    anchor: opt.Anchor = None,
    seeds: Annotated[int, typer.Option(help="seeds per configuration")] = 3,
    fusions: Annotated[str | None, typer.Option(help="fusions to compare")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the results")] = Path(
        "comparison"
    ),
    overwrite: Annotated[bool, typer.Option(help="replace earlier results")] = False,
    config: opt.ConfigFile = None,
    inputs: opt.Inputs = None,
    fusion: opt.Fusion = None,
    epochs: opt.Epochs = None,
    max_time: opt.MaxTime = None,
    seed: opt.Seed = None,
    modality_dropout: opt.ModalityDropout = None,
    strict: opt.Strict = None,
    augment: opt.Augment = None,
    workers: opt.Workers = None,
    compile: opt.Compile = None,
    devices: opt.Devices = None,
    num_nodes: opt.NumNodes = None,
    strategy: opt.Strategy = None,
    encoder: opt.Encoder = None,
    encoder_mode: opt.EncoderMode = None,
    decoder: opt.Decoder = None,
    preset: opt.Preset = None,
    gradient_checkpointing: opt.GradientCheckpointing = None,
) -> None:
    """Each unimodal model, each fusion and a unimodal ensemble, side by side; every run
    takes the config options `train` takes (--fusion: the unimodal runs' fusion)."""
    from polymodal.data.problems import BadInputError
    from polymodal.evaluation.compare import compare as run_compare
    from polymodal.evaluation.compare import write_comparison

    if (out_dir / "comparison.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir}/comparison.json exists; pass --overwrite to replace it")
    settings = opt.settings_from(config, locals())
    if len(settings.targets) != 1:
        named = ", ".join(t.column for t in settings.targets) or "none"
        raise BadInputError(f"compare takes one target (--target or --match), not {named}")
    result = run_compare(
        data, settings.targets[0].column, settings, seeds=seeds, fusions=split_list(fusions),
        log=console.print,
    )  # fmt: skip
    print_comparison(result)
    json_path, html_path = write_comparison(result, out_dir)
    out.print(f"written: [bold]{json_path}[/] and [bold]{html_path}[/]")


@app.command("list")
@friendly_errors
def list_components(
    kind: Annotated[
        str, typer.Argument(help="encoders, fusions, tasks or modalities")
    ] = "encoders",
) -> None:
    """List registered components."""
    from polymodal.encoders import ENCODERS
    from polymodal.fusion import FUSIONS
    from polymodal.modalities import MODALITIES
    from polymodal.tasks import TASKS

    registries = {
        "encoders": ENCODERS,
        "fusions": FUSIONS,
        "tasks": TASKS,
        "modalities": MODALITIES,
    }
    if kind not in registries:
        raise KeyError(f"unknown component kind {kind!r}; known: {', '.join(registries)}")
    registry = registries[kind]
    for name in registry.names():
        tags = registry.tags(name)
        out.print(name + (f"  ({', '.join(f'{k}={v}' for k, v in tags.items())})" if tags else ""))


# --- explanation and robustness commands (explain, report) go here ---
@app.command()
@friendly_errors
def explain(
    model_dir: Annotated[Path, typer.Argument(help="model folder")],
    data: Annotated[Path, typer.Argument(help="table to explain")],
    rows: Annotated[str, typer.Option(help="0-based rows, comma-separated")] = "0,1,2",
    target: Annotated[str | None, typer.Option(help="target to explain")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the results")] = Path(
        "explanations"
    ),
    overwrite: Annotated[bool, typer.Option(help="replace earlier results")] = False,
) -> None:
    """Why the model predicts what it does: each input's contribution, and attributions
    inside each input (PNGs, explanations.json, explain.html)."""
    from polymodal.data.problems import BadInputError
    from polymodal.explain import explain as explain_model
    from polymodal.explain import write_explanations
    from polymodal.model import Model

    if (out_dir / "explanations.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir}/explanations.json exists; pass --overwrite to replace it")
    try:
        chosen = [int(part) for part in split_list(rows) or []]
    except ValueError:
        raise BadInputError(f"--rows takes 0-based row numbers like 0,5,9, not {rows!r}") from None
    model = Model.load(model_dir)
    explanation = explain_model(model, data, rows=chosen, target=target)
    written = write_explanations(explanation, model, out_dir)
    found = explanation.contributions
    if found.metric is not None:
        shares = ", ".join(f"{k} {v:+.4f}" for k, v in found.metric_contributions.items())
        out.print(f"contributions to {found.metric} ({found.metric_all:.4f} in all): {shares}")
    for row in explanation.rows:
        out.print(f"row {row.row}: predicted {row.prediction} ({row.value:.3f})")
    out.print(f"{len(written)} files written to [bold]{out_dir}[/] (open explain.html)")


@app.command()
@friendly_errors
def report(
    model_dir: Annotated[Path, typer.Argument(help="model folder")],
    data: Annotated[Path | None, typer.Argument(help="labelled table to analyse")] = None,
    output: Annotated[Path | None, typer.Option("--out", help="HTML file to write")] = None,
    robustness: Annotated[bool, typer.Option(help="with DATA: noise and removal")] = True,
    adversarial: Annotated[bool, typer.Option(help="with DATA: FGSM and PGD")] = True,
    group_by: Annotated[
        list[str] | None, typer.Option(help="metric per group of this column (repeatable)")
    ] = None,
    max_rows: Annotated[int, typer.Option(min=1, help="rows of DATA analysed at most")] = 500,
) -> None:
    """One self-contained HTML report: training, metrics, comparison and, with DATA,
    contributions, attributions, robustness and group metrics."""
    from polymodal.explain import ReportOptions, write_report
    from polymodal.model import Model

    model = Model.load(model_dir)
    options = ReportOptions(
        group_by=group_by or [], robustness=robustness, adversarial=adversarial, max_rows=max_rows
    )
    path = write_report(model, model_dir, output or model_dir / "report.html", data, options)
    out.print(f"report written to [bold]{path}[/]")


def add_stress_tests(
    model: Any, data: Path, report: dict, robustness: bool, adversarial: bool, group_by: list[str]
) -> None:
    """`evaluate --robustness / --group-by`: print the tables, nest the results per target."""
    from polymodal.explain import group_metrics
    from polymodal.explain import robustness as run_robustness
    from polymodal.explain.terminal import groups_table, robustness_tables

    if robustness:
        results = run_robustness(model, data, adversarial=adversarial)["targets"]
        for target, result in results.items():
            report[target]["robustness"] = result
            for view in robustness_tables(target, result):
                out.print(view)
    for column in group_by:
        for target, found in group_metrics(model, data, column).items():
            report[target].setdefault("groups", {})[column] = found
            out.print(groups_table(target, found))


# --- search commands (embed, index, search) ---
Column = Annotated[str, typer.Option(help="the input column whose vectors are made")]


@app.command()
@friendly_errors
def embed(
    model_dir: Annotated[Path, typer.Argument(help="model folder")],
    data: Annotated[Path, typer.Argument(help="table to embed: CSV, Parquet or JSONL")],
    column: Column,
    output: Annotated[Path, typer.Option("-o", "--output", help="Parquet file to write")] = Path(
        "vectors.parquet"
    ),
    overwrite: Annotated[bool, typer.Option(help="replace an existing output file")] = False,
    engine: opt.EngineOption = opt.Engine.local,
    address: opt.Address = None,
    workers: opt.RayWorkers = None,
) -> None:
    """Write each row's vector of one input (the fused representation with only that input
    present) to Parquet: row, the table's columns, vector.

    --engine ray embeds shards of the table on a Ray cluster: the same file, byte for byte."""
    from polymodal.model import Model
    from polymodal.search.embeddings import embed_rows, write_vectors

    opt.check_engine(engine, address, workers)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    if engine is opt.Engine.ray:
        from polymodal.serving.ray_batch import embed_on_ray

        embedded = embed_on_ray(model_dir, data, column, address=address, workers=workers)
    else:
        embedded = embed_rows(Model.load(model_dir), data, column)
    write_vectors(embedded, output)
    print_problems([vars(p) for p in embedded.problems.problems])
    out.print(f"{len(embedded.vectors)} vectors written to [bold]{output}[/]{skipped(embedded)}")


@app.command()
@friendly_errors
def index(
    model_dir: Annotated[Path, typer.Argument(help="model folder")],
    data: Annotated[Path, typer.Argument(help="table to index: CSV, Parquet or JSONL")],
    column: Column,
    db: Annotated[Path, typer.Option(help="folder of the vector index")],
    metric: Annotated[
        str | None, typer.Option(help="cosine (the default for a new index), dot or l2")
    ] = None,
    append: Annotated[bool, typer.Option(help="add the rows to the index already in --db")] = False,
) -> None:
    """Store each row's vector of one input in a vector index, with the row's columns as
    metadata, for `polymodal search`."""
    from polymodal.model import Model
    from polymodal.search.embeddings import build_index, index_source

    model = Model.load(model_dir)
    source = index_source(model, model_dir, column)
    embedded = build_index(model, source, data, db, metric, append)
    print_problems([vars(p) for p in embedded.problems.problems])
    added = f"{len(embedded.vectors)} vectors of {column!r} added to [bold]{db}[/]"
    out.print(added + skipped(embedded))


def skipped(embedded: Any) -> str:
    count = embedded.skipped
    return f" ({count} rows without a value of the column skipped)" if count else ""


@app.command()
@friendly_errors
def search(
    db: Annotated[Path, typer.Argument(help="folder of a vector index made by `index`")],
    text: Annotated[str | None, typer.Option(help="query text")] = None,
    image: Annotated[Path | None, typer.Option(help="query image file")] = None,
    audio: Annotated[Path | None, typer.Option(help="query audio file")] = None,
    video: Annotated[Path | None, typer.Option(help="query video file")] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="rows to return")] = 10,
    where: Annotated[
        str | None, typer.Option(help="SQL filter on the metadata, e.g. \"split = 'test'\"")
    ] = None,
    query_column: Annotated[
        str | None, typer.Option(help="the model input the query fills, when several could")
    ] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="one JSON line per hit")] = False,
    by_class: Annotated[
        bool,
        typer.Option(
            help="search for the query's class: rank by the vector of its nearest class "
            "(a match trained with --positive-by) rather than by the query's own vector"
        ),
    ] = False,
    explain: Annotated[
        Path | None,
        typer.Option(help="new folder: why each top image hit is like the query (PNG figures)"),
    ] = None,
    explain_top: Annotated[int, typer.Option(min=1, help="hits explained with --explain")] = 3,
) -> None:
    """The rows of an index nearest to a query: a text or a file, embedded by the model that
    made the index. `--by-class` finds items of the query's class, surest first.
    `--explain DIR` draws, for an index of images, recordings or clips, which regions of
    each top hit make it similar to the query (Integrated Gradients of the score)."""
    from polymodal.data.problems import BadInputError
    from polymodal.search.embeddings import hit_records, search_index

    given = {"text": text, "image": image, "audio": audio, "video": video}
    queries = [(kind, str(value)) for kind, value in given.items() if value is not None]
    if len(queries) != 1:
        raise BadInputError("give exactly one query: --text, --image, --audio or --video")
    result = search_index(
        db, *queries[0], k=k, where=where, query_column=query_column, by_class=by_class
    )
    if result.query_class is not None:
        console.print(
            f"searching by class: the query is nearest to class {result.query_class.name!r} "
            f"(similarity {result.query_class.similarity:.3f}); hits ranked by their "
            "similarity to that class's vector"
        )
    pair = {result.query_column, result.source.column}
    if len(pair) > 1 and not any(pair <= task.shared_space() for task in result.model.net_.tasks):
        console.print(
            f"[yellow]note:[/] the index holds vectors of {result.source.column!r}; the query "
            f"went through {result.query_column!r}, and no target of this model trains the two "
            f"to agree (train one with --match {'='.join(sorted(pair))})"
        )
    records = hit_records(result.hits)
    if explain is not None:
        from polymodal.explain.similarity import explain_search_hits

        for path in explain_search_hits(result, explain, explain_top):
            console.print(f"explanation written to [bold]{path}[/]")
    if json_lines:
        for record in records:
            typer.echo(json.dumps(record, default=str))
        return
    out.print(hits_view(records, f"{len(records)} nearest rows in {db}"))


def hits_view(records: list[dict], title: str) -> RichTable:
    """Search hits as a table: rank, score and id kept whole; long metadata folds in its cell
    rather than being cut off."""
    view = RichTable(title=title)
    for header in records[0] if records else ("rank", "score", "id"):
        whole = header in ("rank", "score", "id")
        justify = "right" if whole else "left"
        view.add_column(header, justify=justify, no_wrap=whole, overflow="fold")
    for record in records:
        view.add_row(*(format_cell(value) for value in record.values()))
    return view


def format_cell(value: Any) -> str:
    """A metadata value as shown: 4 decimals for reals, brackets kept literal (not markup)."""
    from rich.markup import escape

    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else escape(str(value))


# --- serving commands (serve) go here ---
@app.command()
@friendly_errors
def serve(
    model_dir: Annotated[Path, typer.Argument(help="model folder")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="processes, each with the model")] = 1,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="POLYMODAL_API_KEY", help="require this X-API-Key header"),
    ] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="rows per forward pass")] = 32,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="wait to fill a batch")] = 5.0,
    batching: Annotated[bool, typer.Option(help="micro-batch concurrent requests")] = True,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="allow this browser origin (repeatable)")
    ] = None,
    max_request_mb: Annotated[float, typer.Option(min=0.001, help="largest request body")] = 20.0,
    decode_timeout: Annotated[
        float, typer.Option(min=0.001, help="seconds to decode a request")
    ] = 10.0,
    log_level: Annotated[
        str, typer.Option(help="uvicorn log level; warning hides the access log")
    ] = "info",
    index: Annotated[
        Path | None,
        typer.Option(help="a vector index of this model (`polymodal index`) to search"),
    ] = None,
    max_generated: Annotated[
        int, typer.Option(min=1, help="files one /v1/generate request makes (rows x samples)")
    ] = 16,
) -> None:
    """Serve a model over HTTP: REST API (/v1/predict, /v1/generate, /docs) and a web page
    at /."""
    from polymodal.serving.app import serve as run_server
    from polymodal.serving.settings import ServeSettings

    settings = ServeSettings(
        model_dir=model_dir, host=host, port=port, workers=workers, api_key=api_key or None,
        batching=batching, max_batch=max_batch, max_wait_ms=max_wait_ms,
        cors_origins=cors_origin or [], max_request_mb=max_request_mb,
        decode_timeout_s=decode_timeout, log_level=log_level, index_dir=index,
        max_generated=max_generated,
    )  # fmt: skip
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        console.print(f"[yellow]warning:[/] listening on {host} without --api-key")
    run_server(settings)


def main() -> None:  # pragma: no cover - console entry point
    try:
        app(prog_name="polymodal")
    except SystemExit as done:
        leave(done.code)


def leave(code: int | str | None) -> None:
    """End the process without tearing the interpreter down, once the command is done.

    Python's own shutdown frees every object of every module one by one: after a training
    run, with torch, Lightning and what Lightning imports loaded, that took about 1.8 s of a
    22-25 s AV-MNIST run, and changes nothing outside the process. Exit handlers (logging,
    process pools, temporary folders, Ray) still run and the standard streams are flushed
    first. While another non-daemon thread runs, Python's own shutdown waits for it, as usual.
    """
    if isinstance(code, str):  # sys.exit("message"): printed, and the status is 1
        print(code, file=sys.stderr)
        code = 1
    if other_threads_running():
        sys.exit(code)
    atexit._run_exitfuncs()  # what interpreter shutdown would run first
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe (`polymodal list | head`): Python's own status for it
            code = code or 120
    os._exit(code or 0)


def other_threads_running() -> bool:
    main = threading.main_thread()
    return any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
