"""One error shape for every endpoint: ``{"error": {"status", "field", "reason"}}``, a status that means one thing.

400 the body is not UTF-8 JSON; 404 an unknown document id; 409 an endpoint the server was started without
(``/search`` needs ``--index``); 413 a request over the hard limits; 422 a field with a wrong value; 503 the
queue is full (with ``Retry-After``); 504 the request timed out.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError


class ApiError(Exception):
    """A request the server refuses, with the field it blames."""

    def __init__(self, status: int, field: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {field}: {reason}")
        self.status, self.field, self.reason, self.headers = status, field, reason, headers or {}

    def body(self) -> dict:
        return {"error": {"status": self.status, "field": self.field, "reason": self.reason}}


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """The request body as ``model``: UTF-8, then JSON, then the model's fields, each failure an :class:`ApiError`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "body", f"not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(400, "body", f"malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise ApiError(422, _field(first["loc"]) or "body", first["msg"]) from None


def _field(loc: tuple) -> str:
    """``("documents", 2, "text")`` -> ``documents[2].text``; pydantic's union branch names are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "DocumentObject", "function-after[check(), DocumentObject]"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out
