"""The `polymodal` command line: train, predict, evaluate, inspect, demo, list."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table as RichTable

from polymodal.config import ConfigError, load_config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train, evaluate and use multimodal models over tables of text, images, audio, "
    "video, numbers and categories.",
)
console = Console(stderr=True)
out = Console()


def quiet_libraries() -> None:
    """Keep Lightning's tips and PyTorch's warnings out of the user's way."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def friendly_errors(command: Any) -> Any:
    """Bad input ends the command with one line naming what is wrong, not a traceback."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from polymodal.data.problems import BadInputError

        quiet_libraries()
        try:
            return command(*args, **kwargs)
        except (BadInputError, ConfigError, KeyError, FileExistsError) as error:
            message = error.args[0] if error.args else str(error)
            console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return run


def split_list(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


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
    data: Annotated[Path, typer.Argument(help="table: CSV, Parquet or JSONL")],
    target: Annotated[str, typer.Option(help="target column(s), comma-separated")],
    config: Annotated[Path | None, typer.Option(help="YAML config")] = None,
    inputs: Annotated[str | None, typer.Option(help="input columns, comma-separated")] = None,
    fusion: Annotated[str | None, typer.Option(help="concat, late or attention")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="model folder")] = None,
    valid: Annotated[Path | None, typer.Option(help="separate validation table")] = None,
    epochs: Annotated[int | None, typer.Option(help="maximum epochs")] = None,
    max_time: Annotated[str | None, typer.Option(help="minutes, or DD:HH:MM:SS")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    modality_dropout: Annotated[float | None, typer.Option(help="drop whole inputs")] = None,
    strict: Annotated[bool, typer.Option(help="stop at the first bad cell or file")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing model folder")] = False,
    resume: Annotated[
        bool, typer.Option(help="continue from the folder's last checkpoint")
    ] = False,
    report: Annotated[
        bool, typer.Option(help="write report.html (no robustness sweeps: see `report`)")
    ] = True,
    encoder: Annotated[
        list[str] | None,
        typer.Option(
            help="KIND|COLUMN=SOURCE: hf:NAME, timm:NAME, a saved folder or an encoder name "
            "(repeatable), e.g. text=hf:bert-base-uncased"
        ),
    ] = None,
    encoder_mode: Annotated[
        list[str] | None,
        typer.Option(help="frozen, finetune or lora, for all pretrained encoders or KIND=MODE"),
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="fast (from scratch) or accurate (pretrained encoders)")
    ] = None,
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="pretrained encoders that train: less memory, more compute")
    ] = False,
) -> None:
    """Train a model and write its folder (weights, config, metrics, report.html)."""
    from polymodal.presets import configure_encoders

    settings = load_config(config)
    configure_encoders(settings, encoder or [], preset, encoder_mode or [], gradient_checkpointing)
    targets = split_list(target) or []
    check_pretrained_sources(settings, data, targets, split_list(inputs))

    from polymodal.model import Model

    train_settings = settings.train
    for name, value in (("max_epochs", epochs), ("max_time", max_time), ("seed", seed)):
        if value is not None:
            setattr(train_settings, name, value)
    if modality_dropout is not None:
        train_settings.modality_dropout = modality_dropout
    train_settings.strict = strict or train_settings.strict
    folder = out_dir or fresh_output(data, targets)
    model = Model(target=targets, inputs=split_list(inputs), fusion=fusion, config=settings)
    model.fit(data, valid=valid, out=folder, overwrite=overwrite, resume=resume)
    print_metrics(model.metrics_)
    print_problems(model.metrics_.get("problems", []))
    out.print(f"model saved to [bold]{folder}[/]")
    if report:
        from polymodal.explain.report import training_report

        try:
            path = training_report(model, folder, data, valid)
        except Exception as error:  # the model is saved; a report problem must not fail the run
            reason = f"{type(error).__name__}: {error}"
            console.print(f"[yellow]warning:[/] report not written: {reason}")
        else:
            out.print(f"report written to [bold]{path}[/]")


def check_pretrained_sources(
    settings: Any, data: Path, targets: list[str], inputs: list[str] | None
) -> None:
    """Find the pretrained sources the table's columns use before torch loads, so one that
    is unavailable fails within seconds with its one-line message."""
    if not settings.model.encoders:
        return
    from polymodal.data.schema import resolve_inputs
    from polymodal.data.table import read_table
    from polymodal.hub import resolve_source

    selected = settings.model_copy(update={"inputs": inputs or settings.inputs})
    for column, kind in resolve_inputs(read_table(data), selected, targets).items():
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
) -> None:
    """Predict every row of a table in chunks; writes predictions and class probabilities."""
    from polymodal.model import Model
    from polymodal.serving.batch import predict_to_csv

    if output.exists() and not (overwrite or resume):
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it or --resume")
    model = Model.load(model_dir)
    result = predict_to_csv(
        model, data, output, chunk_size=chunk_size, resume=resume, overwrite=overwrite,
        console=console,
    )  # fmt: skip
    print_problems([vars(p) for p in result.problems])
    kept = f" ({result.skipped} already there)" if result.skipped else ""
    out.print(f"{result.written} predictions written to [bold]{output}[/]{kept}")


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
) -> None:
    """Metrics on a labelled table: accuracy, F1, confusion matrix; RMSE, MAE, R².

    --robustness and --group-by add their results under each target in the JSON."""
    from polymodal.model import Model

    model = Model.load(model_dir)
    report = model.evaluate(data)
    print_target_metrics("evaluation", report)
    print_problems([vars(p) for p in model.last_problems_.problems])
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
    target: Annotated[str, typer.Option(help="target column")],
    seeds: Annotated[int, typer.Option(help="seeds per configuration")] = 3,
    config: Annotated[Path | None, typer.Option(help="YAML config")] = None,
    inputs: Annotated[str | None, typer.Option(help="input columns, comma-separated")] = None,
    fusions: Annotated[str | None, typer.Option(help="fusions to compare")] = None,
    epochs: Annotated[int | None, typer.Option(help="maximum epochs, every run")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the results")] = Path(
        "comparison"
    ),
    overwrite: Annotated[bool, typer.Option(help="replace earlier results")] = False,
) -> None:
    """Each unimodal model, each fusion and a unimodal ensemble, side by side."""
    from polymodal.evaluation.compare import compare as run_compare
    from polymodal.evaluation.compare import write_comparison

    if (out_dir / "comparison.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir}/comparison.json exists; pass --overwrite to replace it")
    settings = load_config(config)
    settings.inputs = split_list(inputs) or settings.inputs
    if epochs is not None:
        settings.train.max_epochs = epochs
    result = run_compare(
        data, target, settings, seeds=seeds, fusions=split_list(fusions), log=console.print
    )
    print_comparison(result)
    json_path, html_path = write_comparison(result, out_dir)
    out.print(f"written: [bold]{json_path}[/] and [bold]{html_path}[/]")


def print_comparison(result: dict) -> None:
    view = RichTable(title=f"{result['target']}: test {result['metric']} over seeds")
    for header in ("configuration", "metric", "train s", "parameters"):
        view.add_column(header, justify="left" if header == "configuration" else "right")
    for row in result["configurations"]:
        view.add_row(
            row["name"], f"{row['mean']:.4f} ± {row['std']:.4f}", f"{row['seconds']:.0f}",
            f"{row['parameters']:,}",
        )  # fmt: skip
    out.print(view)
    gain = result.get("modality_gain")
    if gain:
        ratio = f", error ratio {gain['error_ratio']:.2f}" if gain.get("error_ratio") else ""
        out.print(
            f"modality gain: {gain['best_multimodal']} vs {gain['best_unimodal']}: "
            f"{gain['gain']:+.4f} ± {gain['standard_error']:.4f}{ratio}"
        )


@app.command("list")
@friendly_errors
def list_components(
    kind: Annotated[str, typer.Argument(help="encoders, fusions or heads")] = "encoders",
) -> None:
    """List registered components."""
    from polymodal.encoders import ENCODERS
    from polymodal.fusion import FUSIONS
    from polymodal.heads import HEADS

    registries = {"encoders": ENCODERS, "fusions": FUSIONS, "heads": HEADS}
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
    from polymodal.explain import write_explanations
    from polymodal.model import Model

    if (out_dir / "explanations.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir}/explanations.json exists; pass --overwrite to replace it")
    try:
        chosen = [int(part) for part in split_list(rows) or []]
    except ValueError:
        raise BadInputError(f"--rows takes 0-based row numbers like 0,5,9, not {rows!r}") from None
    model = Model.load(model_dir)
    explanation = model.explain(data, rows=chosen, target=target)
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
) -> None:
    """Serve a model over HTTP: REST API (/v1/predict, /docs) and a web page at /."""
    from polymodal.serving.app import serve as run_server
    from polymodal.serving.settings import ServeSettings

    settings = ServeSettings(
        model_dir=model_dir, host=host, port=port, workers=workers, api_key=api_key or None,
        batching=batching, max_batch=max_batch, max_wait_ms=max_wait_ms,
        cors_origins=cors_origin or [], max_request_mb=max_request_mb,
        decode_timeout_s=decode_timeout, log_level=log_level,
    )  # fmt: skip
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        console.print(f"[yellow]warning:[/] listening on {host} without --api-key")
    run_server(settings)


def print_metrics(metrics: dict) -> None:
    for split in ("valid", "test"):
        if split in metrics:
            print_target_metrics(split, metrics[split])
    seconds = metrics.get("train_seconds", 0)
    epochs = len(metrics.get("history", []))
    out.print(f"trained {epochs} epochs in {seconds:.0f} s; best epoch {metrics.get('best_epoch')}")


def print_target_metrics(title: str, report: dict) -> None:
    view = RichTable(title=title)
    view.add_column("target")
    view.add_column("metric")
    view.add_column("value", justify="right")
    for target, values in report.items():
        for name, value in values.items():
            if isinstance(value, float):
                view.add_row(target, name, f"{value:.4f}")
            elif name == "rows":
                view.add_row(target, name, str(value))
    out.print(view)
    for target, values in report.items():
        if "confusion_matrix" in values and len(values["classes"]) <= 12:
            print_confusion(target, values["classes"], values["confusion_matrix"])


def print_confusion(target: str, classes: list[str], matrix: list[list[int]]) -> None:
    view = RichTable(title=f"{target}: confusion matrix (rows true, columns predicted)")
    view.add_column("")
    for name in classes:
        view.add_column(name[:10], justify="right")
    for name, row in zip(classes, matrix, strict=True):
        view.add_row(name[:10], *map(str, row))
    out.print(view)


def print_problems(problems: list[dict], limit: int = 20) -> None:
    if not problems:
        return
    view = RichTable(title=f"{len(problems)} input problems (rows kept, the input masked)")
    for header in ("table", "row", "column", "file", "reason"):
        view.add_column(header)
    for problem in problems[:limit]:
        view.add_row(
            Path(problem.get("table") or "").name, str(problem["row"]), problem["column"],
            problem.get("path") or "", problem["reason"],
        )  # fmt: skip
    console.print(view)
    if len(problems) > limit:
        console.print(f"... and {len(problems) - limit} more (see metrics.json)")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="polymodal")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
