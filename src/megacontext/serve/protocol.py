"""The OpenAI chat-completions wire format: request validation, errors, responses and stream chunks.

`parse_request` turns a request body into a `ChatRequest` or raises an `ApiError` (400) naming the
field; `Completion` builds the JSON response, the SSE chunks and the usage of one completion, so the
route only runs the turn.

Fields honoured: `messages` (`content` a string or a list of text parts, joined by newlines),
`max_tokens` / `max_completion_tokens`, `stream`, `stream_options.include_usage`, `temperature`,
`top_p`, `seed` and `stop` (up to 4 strings, added to the server's own turn stop). Unlike the OpenAI
API, whose default temperature is 1, this server decodes greedily (temperature 0) when `temperature`
is absent or null, so an answer is reproducible unless the client asks for sampling. Refused with a
400 rather than ignored: `n` > 1, a `response_format` other than text, tools and functions, logprobs.

`usage.prompt_tokens` counts the tokens this turn appended to the conversation's memory (only the
messages the store had not seen), not the rows the model read; those are under `megacontext`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from megacontext.prompts import ROLES
from megacontext.sampling import SamplingConfig

if TYPE_CHECKING:
    from megacontext.runtime import Answer

MAX_STOPS = 4  # as the OpenAI API
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls")


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    def body(self) -> dict:
        """The OpenAI error object: `{"error": {message, type, code}}`."""
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {"error": {"message": self.message, "type": kind, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]  # [{role, content: str}]: text parts already joined
    max_tokens: int
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage
    sampling: SamplingConfig = SamplingConfig()
    stop: tuple[str, ...] = ()  # the client's stop strings (the server adds its own)


def _number(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ApiError(400, f"`{name}` must be a number, got {value!r}")
    return value


def _content(m: dict, i: int) -> str:
    """A message's content as one string: a string, or a list of `{"type": "text", "text": ...}` parts."""
    content = m.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(400, f"`messages[{i}].content`: only text parts are supported, got {kind!r}")
            texts.append(part["text"])
        return "\n".join(texts)
    raise ApiError(400, f"`messages[{i}].content` must be a string or a list of text parts")


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        role = "system" if role == "developer" else role  # the API's newer name for system instructions
        if role not in ROLES:
            raise ApiError(400, "each message needs a `role` (system, developer, user or assistant) and a "
                                "string `content`")
        out.append({"role": role, "content": _content(m, i)})
    return out


def _sampling(body: dict) -> SamplingConfig:
    temperature, top_p, seed = _number(body, "temperature"), _number(body, "top_p"), body.get("seed")
    if temperature is not None and not 0 <= temperature <= 2:
        raise ApiError(400, f"`temperature` must be in [0, 2], got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ApiError(400, f"`top_p` must be in (0, 1], got {top_p}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**63):
        raise ApiError(400, f"`seed` must be a 64-bit integer, got {seed!r}")
    return SamplingConfig(temperature=float(temperature or 0.0), top_p=float(1.0 if top_p is None else top_p),
                          seed=seed)


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    stops = () if stop is None else (stop,) if isinstance(stop, str) else stop
    if not isinstance(stops, list | tuple) or len(stops) > MAX_STOPS or not all(
            isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"`stop` must be a non-empty string or a list of at most {MAX_STOPS} of them, "
                            f"got {stop!r}")
    return tuple(stops)


def _refuse_unsupported(body: dict) -> None:
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ApiError(400, f"`n` must be a positive integer, got {n!r}")
    if n is not None and n > 1:
        raise ApiError(400, f"`n`: this server returns one choice per request, got n={n}")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise ApiError(400, f"`response_format`: only {{\"type\": \"text\"}} is supported, got {fmt!r}")
    for name in UNSUPPORTED:
        if body.get(name) not in (None, [], "none"):
            raise ApiError(400, f"`{name}`: tool and function calling is not supported by this server")
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") is not None:
        raise ApiError(400, "`logprobs`: log probabilities are not supported by this server")
    for name in ("presence_penalty", "frequency_penalty"):  # refused rather than silently ignored
        if body.get(name) not in (None, 0, 0.0):
            raise ApiError(400, f"`{name}`: penalties are not supported by this server (leave it 0)")
    if body.get("logit_bias") not in (None, {}):
        raise ApiError(400, "`logit_bias` is not supported by this server")


def parse_request(body: Any, model_name: str) -> ChatRequest:
    """Validate a chat-completions request body; raises `ApiError` naming the offending field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if body.get("model") not in (None, model_name, "megacontext"):
        raise ApiError(404, f"unknown model {body.get('model')!r}; this server has {model_name!r}", "model_not_found")
    messages = _messages(body)
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 128))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 4096:
        raise ApiError(400, "`max_tokens` must be an integer in [1, 4096]")
    _refuse_unsupported(body)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise ApiError(400, f"`stream` must be a boolean, got {stream!r}")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise ApiError(400, "`stream_options` must be an object like {\"include_usage\": true}")
    return ChatRequest(messages, max_tokens, stream, bool(options.get("include_usage")), _sampling(body),
                       _stop(body))


def usage(answer: Answer) -> dict:
    """prompt: the tokens this turn appended (new messages + the turn prefix); completion: generated."""
    completion = len(answer.token_ids)
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": completion,
            "total_tokens": answer.prompt_tokens + completion}


def sse(payload: dict | str) -> str:
    return "data: " + (payload if isinstance(payload, str) else json.dumps(payload)) + "\n\n"


DONE = sse("[DONE]")


@dataclass(frozen=True)
class Completion:
    """One completion's identity, repeated by its response or by each of its stream chunks."""

    model: str
    conversation: str
    include_usage: bool = False
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def response(self, answer: Answer) -> dict:
        """The non-streamed `chat.completion` body."""
        return {**self._head("chat.completion"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": answer.finish_reason}],
                "usage": usage(answer),
                "megacontext": {"conversation": self.conversation, "rows_used": answer.rows_used,
                                "budget": answer.budget, "timings": answer.timings}}

    def chunk(self, delta: dict, finish: str | None = None) -> str:
        """One `chat.completion.chunk` event carrying `delta`."""
        body = {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if self.include_usage:
            body["usage"] = None  # as the OpenAI API: null on every chunk but the last
        return sse(body)

    def end(self, answer: Answer) -> Iterator[str]:
        """The finishing chunk (empty delta, the finish reason), then the usage chunk if asked, then [DONE]."""
        yield self.chunk({}, answer.finish_reason)
        if self.include_usage:
            yield sse({**self._head("chat.completion.chunk"), "choices": [], "usage": usage(answer),
                       "megacontext": {"conversation": self.conversation, "rows_used": answer.rows_used,
                                       "budget": answer.budget}})
        yield DONE

    def fail(self, error: ApiError) -> Iterator[str]:
        """An error once the stream has started (the status line is already sent), then [DONE]."""
        yield sse(error.body())
        yield DONE
