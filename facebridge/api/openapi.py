"""Request bodies in the OpenAPI document for routes that read their body themselves.

/embed, /translate and /verify parse their bodies by hand (several media types, problem+json errors
with row-level field names), so FastAPI does not see a body parameter. `request_body` declares each
media type's schema; pydantic models are referenced under #/components/schemas and added there, with
their nested models, when the document is built (`install_openapi`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"
_BODY_MODELS: list[type[BaseModel]] = []


def request_body(
    content: dict[str, type[BaseModel] | dict[str, Any]], required: bool = True
) -> dict[str, Any]:
    """`openapi_extra` for a route: one schema per media type (a pydantic model or a raw schema)."""
    media: dict[str, Any] = {}
    for media_type, schema in content.items():
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            _BODY_MODELS.append(schema)
            media[media_type] = {"schema": {"$ref": REF_TEMPLATE.format(model=schema.__name__)}}
        else:
            media[media_type] = {"schema": schema}
    return {"requestBody": {"required": required, "content": media}}


def install_openapi(app: FastAPI) -> None:
    """Build the document as FastAPI does, then add the declared body models to its components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for model in _BODY_MODELS:
            schema = model.model_json_schema(ref_template=REF_TEMPLATE)
            for name, nested in schema.pop("$defs", {}).items():
                components.setdefault(name, nested)
            components.setdefault(model.__name__, schema)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
