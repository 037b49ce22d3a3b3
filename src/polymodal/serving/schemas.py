"""Request and response bodies: what /docs shows and what the server validates."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from polymodal.tasks import TargetPrediction  # each task's part of a response subclasses it


class FileValue(BaseModel):
    """A file sent inside JSON. Only its bytes are used: never a name or a path."""

    model_config = ConfigDict(extra="forbid")
    base64: str = Field(description="the file's bytes, base64-encoded")


JsonCell = FileValue | StrictStr | StrictInt | StrictFloat | None
JsonRow = dict[str, JsonCell]


class RowsBody(BaseModel):
    """Several rows in one request."""

    model_config = ConfigDict(extra="forbid")
    rows: list[JsonRow] = Field(min_length=1)


class WidgetInfo(BaseModel):
    """How a form asks for the column, as its modality describes it."""

    control: str = Field(description="file, textarea, number, select or text")
    capture: str | None = Field(None, description="camera or microphone: offer to record")
    preview: str | None = Field(None, description="img, audio or video: show a chosen file")


class InputField(BaseModel):
    """One column a request may fill."""

    name: str = Field(description="the column name to use in a request")
    kind: str = Field(description="a registered modality: text, image, audio, ...")
    widget: WidgetInfo
    file: bool = Field(description="true: send a file (multipart upload or base64 in JSON)")
    accept: str | None = Field(None, description="for a browser's file input `accept`")
    formats: list[str] = Field([], description="file formats read, told apart by content")
    categories: list[str] | None = Field(None, description="values seen in training")
    categories_truncated: bool = False
    inputs: list[str] = Field(description="the model inputs this column feeds")


class TargetInfo(BaseModel):
    """One column a prediction is made for."""

    column: str
    task: str = Field(description="a registered task: multiclass, regression, text, ...")
    classes: list[str] = []
    text: bool = Field(
        False,
        description="true: `predicted` is text the model writes (a transcript, a caption, an "
        "answer), with its `log_probability` and maybe an `nbest` list; not one of `classes`",
    )
    generates: str | None = Field(
        None,
        description="the media type a generated target makes (image/png, audio/wav): POST "
        "/v1/generate samples it, and its prediction holds the file as a data: URL",
    )


class SearchInfo(BaseModel):
    """The vector index the server searches (`polymodal serve --index`)."""

    column: str = Field(description="the model input whose vectors the index holds")
    kind: str = Field(description="that input's kind: image, audio, text, ...")
    rows: int = Field(description="vectors in the index")
    metric: str = Field(description="cosine or dot: higher scores are nearer; l2: lower")
    files: bool = Field(description="true: hits have a file_url serving the stored file")
    preview: str | None = Field(
        description="the page element that shows a stored file (img, audio, video); None: none"
    )
    query_kinds: list[str] = Field(
        description="the queries the model can embed: text, image, audio, video"
    )
    max_k: int
    by_class: bool = Field(
        False, description="whether by_class searches work: the model placed classes there"
    )


class SchemaResponse(BaseModel):
    inputs: list[InputField]
    targets: list[TargetInfo]
    max_rows: int
    max_request_mb: float
    api_key_required: bool
    search: SearchInfo | None = Field(None, description="null unless started with --index")


class InputWarning(BaseModel):
    row: int
    column: str
    message: str


class PredictResponse(BaseModel):
    predictions: list[dict[str, SerializeAsAny[TargetPrediction]]] = Field(
        description="one entry per row, in request order: target → prediction"
    )
    warnings: list[InputWarning] = []


MAX_SAMPLES, MAX_STEPS, MAX_GUIDANCE = 16, 100, 20.0


class SamplingSettings(BaseModel):
    """A generate request's sampling settings; a setting left out keeps the model's own."""

    model_config = ConfigDict(extra="forbid")
    guidance: float | None = Field(
        None, ge=0, le=MAX_GUIDANCE, description="classifier-free guidance: 0 unconditional, 1 "
        "conditional only (one network pass a step), above 1 two passes a step",
    )  # fmt: skip
    steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="sampling steps (time grows with them)"
    )
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="the same seed and inputs give the same bytes"
    )
    samples: int = Field(1, ge=1, le=MAX_SAMPLES, description="samples per row")

    def decoding(self) -> dict[str, float | int]:
        """The settings given, as `Model.set_decoding` takes them."""
        return self.model_dump(exclude={"samples"}, exclude_none=True)


class GenerateQuery(SamplingSettings):
    """The query of POST /v1/generate: sampling settings (they win over the body's) and the
    answer's format."""

    format: str | None = Field(
        None,
        description="json, or the generated file's type (png) for its raw bytes (one row, one "
        "sample); unset: raw bytes when the Accept header names the file's media type "
        "(image/png) and not application/json",
    )


SAMPLING_NAMES = tuple(name for name in SamplingSettings.model_fields if name != "samples")


class GenerateResponse(BaseModel):
    generated: list[list[dict[str, SerializeAsAny[TargetPrediction]]]] = Field(
        description="one entry per row, in request order, each a list of `samples` samples: "
        "generated target → its prediction, the file as a data: URL (data:image/png;base64,...)"
    )
    settings: dict[str, dict[str, float | int]] = Field(
        description="per generated target, the sampling settings used (also in each file's "
        "provenance mark)"
    )
    warnings: list[InputWarning] = []


class TargetExplanation(BaseModel):
    explained: str = Field(description="what the contributions add up to")
    predicted: str | float | list[str]
    value: float = Field(description="the explained value with every input")
    base: float = Field(description="the explained value with every input masked")
    contributions: dict[str, float] = Field(description="input → exact Shapley value")


class ExplainResponse(BaseModel):
    method: str
    explanations: list[dict[str, TargetExplanation]]
    warnings: list[InputWarning] = []


class EmbedResponse(BaseModel):
    column: str = Field(description="the model input the vectors are of")
    dim: int
    vectors: list[list[float] | None] = Field(
        description="one per row, in request order; null where the row has no value there"
    )
    warnings: list[InputWarning] = []


class SearchBody(BaseModel):
    """A search as JSON: exactly one query (a text, or a file as base64 or a data: URL)."""

    model_config = ConfigDict(extra="forbid")
    text: StrictStr | None = None
    image: FileValue | StrictStr | None = None
    audio: FileValue | StrictStr | None = None
    video: FileValue | StrictStr | None = None
    k: StrictInt = Field(10, description="hits to return, 1 to 100")
    where: StrictStr | None = Field(None, description="SQL filter on the metadata")
    query_column: StrictStr | None = Field(
        None, description="the model input the query fills, when several could"
    )
    by_class: StrictBool = Field(
        False,
        description="search for the query's class: rank by the vector of its nearest class "
        "(a match trained with --positive-by) rather than by the query's own vector",
    )


class SearchClass(BaseModel):
    name: str = Field(description="the class nearest to the query, whose vector was searched")
    similarity: float = Field(description="the query's cosine similarity to that class")


class SearchHit(BaseModel):
    rank: int
    score: float = Field(description="cosine similarity or dot product (higher nearer), or l2")
    id: int
    metadata: dict[str, object] = Field(description="the indexed table's row: its columns")
    file_url: str | None = Field(None, description="the stored file (image/audio/video index)")


class SearchResponse(BaseModel):
    query_column: str = Field(description="the model input the query was embedded through")
    indexed_column: str
    query_class: SearchClass | None = Field(None, description="with by_class: the class searched")
    hits: list[SearchHit]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    batching: bool


class ErrorResponse(BaseModel):
    error: str
    column: str | None = None
    row: int | None = None
