"""The OpenAI chat-completions wire format: request validation, errors, responses and stream chunks."""

from __future__ import annotations

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def parse_request(body: dict, model_name: str) -> tuple[list[dict], int, bool]:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if body.get("model") not in (None, model_name, "megacontext"):
        raise ApiError(404, f"unknown model {body.get('model')!r}; this server has {model_name!r}", "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ApiError(400, "each message needs a `role` (system, user or assistant) and a string `content`")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 128))
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= 4096:
        raise ApiError(400, "`max_tokens` must be an integer in [1, 4096]")
    return messages, max_tokens, bool(body.get("stream", False))
