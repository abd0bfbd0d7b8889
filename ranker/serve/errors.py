"""One error shape for every endpoint: ``{"error": {"status", "field", "reason", "request_id"}}``, a status that
means one thing.

400 the body is not UTF-8 JSON (or nested too deeply to parse); 404 an unknown document id or path; 405 a method
the path does not take; 408 a body that did not arrive in time; 409 an endpoint the server was started without
(``/search`` needs ``--index``); 413 a request over the hard limits (the body's size is checked while it is read,
its count of JSON values before it is parsed); 422 a field with a wrong value; 431 request headers over h11's
limit; 500 a fault of the server (logged as one line with the request id); 503 the queue or the connections are
full (with ``Retry-After``); 504 the request timed out. A request whose client hung up is counted as 499 (nginx's
convention), never answered.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, ValidationError


class ApiError(Exception):
    """A request the server refuses, with the field it blames."""

    def __init__(self, status: int, field: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {field}: {reason}")
        self.status, self.field, self.reason, self.headers = status, field, reason, headers or {}

    def body(self, request_id: str | None = None) -> dict:
        error = {"status": self.status, "field": self.field, "reason": self.reason}
        return {"error": {**error, "request_id": request_id} if request_id else error}


def request_id_of(given: str | None) -> str:
    """The client's ``X-Request-Id`` when it is a short printable token, else a new one."""
    if given and len(given) <= 64 and given.isascii() and given.isprintable() and " " not in given:
        return given
    return uuid.uuid4().hex


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """The request body as ``model``: UTF-8, then JSON, then the model's fields, each failure an :class:`ApiError`.
    (Its size and count of JSON values were bounded while it arrived: :mod:`ranker.serve.limits`.)"""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "body", f"not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        return _parse(text, model)
    except RecursionError:  # json, the surrogate walk or pydantic ran out of stack
        raise ApiError(400, "body", "JSON nested too deeply to parse") from None


class JsonValues:
    """How many values a JSON text holds, counted on its bytes part by part as they arrive, before any is parsed
    (parsing costs by the value): each array, object and separator outside strings, and each string. Counting stops
    once the strings alone are over ``limit``, so a body of many keys costs a few byte scans."""

    def __init__(self, limit: int):
        self.limit, self.outside, self.strings = limit, 0, 0
        self._in_string, self._escaped = False, False

    @property
    def values(self) -> int:
        return max(self.outside, self.strings)

    @property
    def over(self) -> bool:
        return self.values > self.limit

    def feed(self, part: bytes) -> None:
        """Count the next part of the text."""
        if self._escaped:  # the last part ended on a backslash: this part's first byte is escaped
            part, self._escaped = part[1:], False
        if self.over:
            return
        if (len(part) - len(part.rstrip(b"\\"))) % 2:  # an odd run of backslashes at the end escapes what follows
            part, self._escaped = part[:-1], True
        part = part.replace(b"\\\\", b"").replace(b'\\"', b"")  # escaped quotes do not end a string
        quotes = part.count(b'"')
        self.strings += (quotes + self._in_string) // 2
        if self.over:
            return
        pieces = part.split(b'"') if quotes else [part]
        self.outside += sum(p.count(b",") + p.count(b"[") + p.count(b"{") for p in pieces[self._in_string::2])
        self._in_string ^= quotes % 2 == 1


def _parse(text: str, model: type[BaseModel]) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(400, "body", f"malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if (where := _unencodable(data, ())) is not None:  # "\ud800": valid JSON, but no text a tokenizer can read
        raise ApiError(422, _field(where) or "body", "holds a lone UTF-16 surrogate (\\ud800-\\udfff): not text")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise ApiError(422, _field(first["loc"]) or "body", first["msg"]) from None


def _unencodable(data: Any, loc: tuple) -> tuple | None:
    """Where in parsed JSON a string (or key) cannot be encoded as UTF-8, or ``None``."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return loc
    elif isinstance(data, dict):
        for key, value in data.items():
            if (found := _unencodable(key, loc)) is not None or (found := _unencodable(value, (*loc, key))) is not None:
                return found
    elif isinstance(data, list):
        for i, value in enumerate(data):
            if (found := _unencodable(value, (*loc, i))) is not None:
                return found
    return None


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
