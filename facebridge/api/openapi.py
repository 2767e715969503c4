"""Request bodies in the OpenAPI document for routes that read their body themselves.

/embed, /translate and /verify parse their bodies by hand (several media types, problem+json errors
with row-level field names), so FastAPI does not see a body parameter. `request_body` declares each
media type's schema; pydantic models are referenced under #/components/schemas and added there, with
their nested models, when the document is built (`install_openapi`).

Every operation behind an API key also states the scope it needs (facebridge/service/security.py): in its
security requirement (`{"APIKeyHeader": ["translate"]}`; empty: any valid key), in `x-required-scopes`
and in its description, with the 401, 403 and 429 problem answers.
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


def _add_model(components: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    for name, nested in schema.pop("$defs", {}).items():
        components.setdefault(name, nested)
    components.setdefault(model.__name__, schema)


def declare_scopes(document: dict[str, Any]) -> None:
    """Per secured operation: `x-required-scopes`, a line of description, 401/403/429 answers."""
    from facebridge.service.errors import PROBLEM_MEDIA_TYPE, PROBLEM_RESPONSES
    from facebridge.service.security import ADMIN_PREFIX

    problem = {"schema": {"$ref": REF_TEMPLATE.format(model="ProblemDetail")}}
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or not operation.get("security"):
                continue
            scopes: list[str] = []
            for requirement in operation["security"]:
                scopes += [s for needed in requirement.values() for s in needed if s not in scopes]
            if path.startswith(ADMIN_PREFIX) and "admin" not in scopes:
                scopes.append("admin")
                operation["security"] = [{name: scopes for name in r} for r in operation["security"]]
            operation["x-required-scopes"] = scopes
            note = (
                "**API key scope:** " + ", ".join(f"`{s}`" for s in scopes)
                if scopes
                else "**API key:** any valid key (no scope needed)."
            )
            operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
            answers = operation.setdefault("responses", {})
            for status in (401, 403, 429):
                if str(status) not in answers:
                    answers[str(status)] = {
                        "description": PROBLEM_RESPONSES[status]["description"],
                        "content": {PROBLEM_MEDIA_TYPE: problem},
                    }


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
        from facebridge.schemas.problem import ProblemDetail

        models: list[type[BaseModel]] = [*_BODY_MODELS, ProblemDetail]
        for model in models:
            _add_model(components, model)
        declare_scopes(document)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
