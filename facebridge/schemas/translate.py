"""Request and response bodies of POST /translate (also what the library and the client return)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictFloat


class TranslateRequest(BaseModel):
    """JSON form of a translation; the bulk form sends the same rows as a .npy body."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"source": "arcface-mbf128", "target": "sirius-mbf192", "embeddings": [[0.088] * 128] * 2}
            ]
        },
    )

    source: str = Field(description="model id whose space the embeddings are in")
    target: str = Field(description="model id whose space they are carried into")
    embeddings: list[list[StrictFloat]] = Field(min_length=1, description="one embedding per row")


class MapUsed(BaseModel):
    id: str
    method: str
    file: str
    mean_cosine: float | None
    accuracy_cross: float | None
    accuracy_target_native: float | None


class TranslateResponse(BaseModel):
    source: str
    target: str
    composed: bool = Field(description="true when no direct map exists and maps were chained")
    maps: list[MapUsed]
    embeddings: list[list[float]] = Field(description="L2-normalised, in the order sent")
    confidence: list[float] | None = Field(
        default=None,
        description="per row, the expected cosine between the translated template and the target model's "
        "own embedding of the same photo (a chain multiplies its hops'); null when a map of the path "
        "has no confidence predictor. Re-enrol the least confident first, or hold them to a higher "
        "threshold",
    )
