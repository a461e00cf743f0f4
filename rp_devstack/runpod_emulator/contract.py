"""RunPod's REST v2 contract, read from its OpenAPI 3.1 document: request and answer validation.

`openapi.json` beside this module is RunPod's public runpod/docs repository,
api-reference-v2/openapi.json (commit a900806e), unchanged.

Schemas are JSON Schema 2020-12 (OpenAPI 3.1 dialect), checked with `openapi-schema-validator`
(the jsonschema-based validator made for OpenAPI); `$ref`s resolve inside the whole document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT_PATH = Path(__file__).with_name("openapi.json")
_DOC_URI = "urn:runpod-rest-v2"


@dataclass(frozen=True)
class Operation:
    method: str
    template: str  # e.g. "/v2/pods/{id}"
    spec: dict[str, Any]
    path_params: dict[str, str]

    @property
    def operation_id(self) -> str:
        return str(self.spec.get("operationId", ""))


class Contract:
    """The document, its routes, and validators for request bodies, parameters and answers."""

    def __init__(self, document: dict[str, Any]) -> None:
        # Every `#/...` reference made absolute, so any schema taken out of the document (an
        # inline parameter schema, a response schema) resolves its references in the registry.
        self.document = _absolute_refs(document)
        resource: Resource[Any] = DRAFT202012.create_resource(self.document)
        self._registry: Registry = Registry().with_resource(_DOC_URI, resource)
        self._routes = [
            (method.upper(), template, _template_regex(template), spec)
            for template, item in self.document["paths"].items()
            for method, spec in item.items()
            if method in {"get", "post", "put", "patch", "delete"}
        ]

    def match(self, method: str, path: str) -> Operation | None:
        for m, template, regex, spec in self._routes:
            if m == method and (found := regex.fullmatch(path)):
                return Operation(m, template, spec, found.groupdict())
        return None

    def allowed_methods(self, path: str) -> list[str]:
        return [m for m, _t, regex, _s in self._routes if regex.fullmatch(path)]

    def request_errors(self, op: Operation, body: Any) -> list[str]:
        """Violations of the operation's request-body schema, each naming the field."""
        content = (op.spec.get("requestBody") or {}).get("content") or {}
        schema = (content.get("application/json") or {}).get("schema")
        if schema is None:
            return []
        return self._errors(schema, body)

    def query_errors(self, op: Operation, query: dict[str, list[str]]) -> list[str]:
        """Violations of the operation's query parameters (form style, comma lists)."""
        errors = []
        for param in self._parameters(op):
            if param.get("in") != "query" or param["name"] not in query:
                continue
            schema = param.get("schema") or {}
            raw = query[param["name"]][-1]
            value = _coerce(raw, self._resolve(schema))
            errors += [
                e.replace("$", param["name"], 1) for e in self._errors(schema, value, root="$")
            ]
        return errors

    def query_value(self, op: Operation, query: dict[str, list[str]], name: str) -> Any:
        for param in self._parameters(op):
            if param.get("name") == name and name in query:
                return _coerce(query[name][-1], self._resolve(param.get("schema") or {}))
        return None

    def response_errors(
        self, op: Operation, status: int, content_type: str, body: Any
    ) -> list[str]:
        """Violations of what the document says this operation answers with `status`."""
        responses = op.spec.get("responses") or {}
        answer = responses.get(str(status)) or responses.get("default")
        if answer is None:
            return [f"status {status} is not a documented answer of {op.operation_id}"]
        answer = self._resolve(answer)
        content = answer.get("content") or {}
        if not content:
            return [] if body is None else [f"{op.operation_id} {status} must have no body"]
        media = content.get(content_type.split(";")[0].strip())
        if media is None:
            return [f"{op.operation_id} {status} is not documented as {content_type}"]
        schema = media.get("schema")
        if schema is None or content_type.startswith("text/"):
            return []
        return self._errors(schema, body)

    def schema_errors(self, name: str, value: Any) -> list[str]:
        return self._errors({"$ref": f"{_DOC_URI}#/components/schemas/{name}"}, value)

    def _parameters(self, op: Operation) -> list[dict[str, Any]]:
        item = self.document["paths"][op.template]
        params = list(item.get("parameters") or []) + list(op.spec.get("parameters") or [])
        return [self._resolve(p) for p in params]

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].split("#/", 1)[1].split("/"):
                target = target[part]
            node = target
        return node

    def _errors(self, schema: dict[str, Any], value: Any, root: str = "$") -> list[str]:
        validator = OAS31Validator(schema, registry=self._registry)
        found: list[ValidationError] = sorted(
            validator.iter_errors(value), key=lambda e: list(e.absolute_path)
        )
        return [self._describe(e, root) for e in found]

    def _describe(self, error: ValidationError, root: str) -> str:
        """`$.gpu.bogus: ...`: the JSON path of the rejected field, then why."""
        path = root + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
        )
        if error.validator in {"unevaluatedProperties", "additionalProperties"}:
            named = re.findall(r"'([^']+)'", error.message)
            # A property that failed its own schema counts as unevaluated too: name only the
            # ones the schema does not declare at all.
            declared = self._declared(error.schema) if isinstance(error.schema, dict) else set()
            extra = [n for n in named if n not in declared] or named
            return f"{path}: additional properties {', '.join(map(repr, extra))} not allowed"
        if error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            if missing:
                return f"{path}.{missing[0]}: missing required property"
        return f"{path}: {error.message}"

    def _declared(self, schema: dict[str, Any]) -> set[str]:
        schema = self._resolve(schema)
        names = set((schema.get("properties") or {}).keys())
        for branch in schema.get("allOf") or []:
            names |= self._declared(branch)
        return names


def _absolute_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                _DOC_URI + v
                if k == "$ref" and isinstance(v, str) and v.startswith("#")
                else _absolute_refs(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolute_refs(v) for v in node]
    return node


def _coerce(raw: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "array":
        return [p for p in raw.split(",") if p]
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            return raw
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw.lower(), raw)
    return raw


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(pattern)


@cache
def load_contract() -> Contract:
    return Contract(json.loads(DOCUMENT_PATH.read_text()))
