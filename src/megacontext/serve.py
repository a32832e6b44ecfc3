"""`megacontext serve`: an OpenAI-compatible HTTP server whose conversations live in stores.

Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (streaming over SSE or not),
`GET /v1/conversations/{id}` (stats, live focus map, latest FocusPlans) and `GET /viewer/{id}`
(the focus viewer page). Each conversation is one store under `--stores DIR`, chosen by the
`X-MegaContext-Conversation` header or a `conversation` field in the request body (default
`default`); it is created on first use. Only messages the store has not seen are appended, so a
client may send the whole history or just the newest turn. Requests for one conversation are
serialised; different conversations run side by side.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.errors import MegaContextError
from megacontext.runtime import MegaContext
from megacontext.views import inspect_store
from megacontext.working import focus_runs, focus_strip

CONVERSATION_HEADER = "X-MegaContext-Conversation"
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MESSAGES = "messages.json"  # hashes of the messages already in a conversation's store
ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _message_hash(m: dict) -> str:
    return hashlib.sha256(json.dumps([m["role"], m["content"]]).encode()).hexdigest()[:16]


class Conversations:
    """Open sessions, one per conversation, each behind its own lock."""

    def __init__(self, root: Path, base: BaseModel, config: MegaConfig) -> None:
        self.root, self.base, self.config = root, base, config
        self._sessions: dict[str, MegaContext] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, cid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(cid, threading.Lock())

    def session(self, cid: str, create: bool) -> MegaContext:
        with self._guard:
            if cid not in self._sessions:
                path = self.root / cid
                if not create and not (path / "meta.json").exists():
                    raise ApiError(404, f"unknown conversation {cid!r}", "conversation_not_found")
                self._sessions[cid] = MegaContext.open(path, self.base, self.config, create=True)
            return self._sessions[cid]

    def close(self) -> None:
        with self._guard:
            for s in self._sessions.values():
                s.close()
            self._sessions.clear()


def _new_text(mc: MegaContext, messages: list[dict]) -> tuple[str, list[str]]:
    """The prompt for the messages this store has not seen yet, and the updated message log."""
    seen = (mc.store.read_json(MESSAGES) or {}).get("hashes", [])
    hashes = [_message_hash(m) for m in messages]
    fresh = messages[len(seen):] if hashes[:len(seen)] == seen and len(hashes) > len(seen) else messages
    text = "".join(f"\n\n{ROLES[m['role']]}: {m['content']}" for m in fresh) + "\n\nAssistant:"
    return text, seen + [_message_hash(m) for m in fresh]


def _parse(body: dict, model_name: str) -> tuple[list[dict], int, bool]:
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


def create_app(stores: str | Path, base: BaseModel, config: MegaConfig = MegaConfig()) -> FastAPI:
    root = Path(stores)
    root.mkdir(parents=True, exist_ok=True)
    convs = Conversations(root, base, config)
    app = FastAPI(title="MegaContext", description=__doc__)
    app.state.conversations = convs
    model_name = base.info.name

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.message, "type": "invalid_request_error", "code": exc.code}},
                            status_code=exc.status)

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "megacontext"}]}

    def conversation_id(request: Request, body: dict) -> str:
        cid = request.headers.get(CONVERSATION_HEADER) or (body.get("conversation") if isinstance(body, dict)
                                                             else None) or "default"
        if not isinstance(cid, str) or not _ID.match(cid):
            raise ApiError(400, f"conversation id must match {_ID.pattern}")
        return cid

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "the request body is not valid JSON") from None
        messages, max_tokens, stream = _parse(body, model_name)
        cid = conversation_id(request, body)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        pieces: queue.Queue = queue.Queue()
        outcome: dict = {}

        def work() -> None:
            try:
                with convs.lock(cid):
                    mc = convs.session(cid, create=True)
                    prompt, log = _new_text(mc, messages)
                    answer = mc.generate(prompt, max_new_tokens=max_tokens, stop="\nUser:", on_token=pieces.put)
                    mc.store.write_json(MESSAGES, {"hashes": log + [_message_hash(
                        {"role": "assistant", "content": answer.text})]})
                    outcome["answer"] = answer
            except (ValueError, MegaContextError) as exc:
                outcome["error"] = ApiError(400, str(exc))
            except Exception as exc:  # noqa: BLE001 — reported to the client, never a crash of the server
                outcome["error"] = ApiError(500, f"internal error: {exc}", "internal_error")
            finally:
                pieces.put(None)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        if not stream:
            import anyio

            await anyio.to_thread.run_sync(thread.join)
            if "error" in outcome:
                raise outcome["error"]
            a = outcome["answer"]
            return {"id": completion_id, "object": "chat.completion", "created": created, "model": model_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": a.text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": len(a.token_ids),
                              "total_tokens": len(a.token_ids)},
                    "megacontext": {"conversation": cid, "rows_used": a.rows_used, "budget": a.budget,
                                    "timings": a.timings}}

        def chunk(delta: dict, finish: str | None = None) -> str:
            return "data: " + json.dumps({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                          "model": model_name, "choices": [{"index": 0, "delta": delta,
                                                                            "finish_reason": finish}]}) + "\n\n"

        def events():
            yield chunk({"role": "assistant", "content": ""})
            while True:
                piece = pieces.get()
                if piece is None:
                    break
                yield chunk({"content": piece})
            thread.join()
            if "error" in outcome:
                err = outcome["error"]
                yield "data: " + json.dumps({"error": {"message": err.message, "code": err.code}}) + "\n\n"
            else:
                yield chunk({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/v1/conversations/{cid}")
    def conversation(cid: str) -> dict:
        if not _ID.match(cid):
            raise ApiError(400, f"conversation id must match {_ID.pattern}")
        mc = convs.session(cid, create=False)
        info = inspect_store(mc.store)
        wc = mc.current
        if wc is not None:
            info["focus"] = {"budget": mc.budget, "num_tokens": wc.num_tokens, "rows": wc.cost,
                             "strip": focus_strip(wc, 200), "runs": focus_runs(wc)}
        trace = mc.store.path / "trace.jsonl"
        info["plans"] = [json.loads(x) for x in trace.read_text().splitlines()[-10:]] if trace.exists() else []
        info["generating"] = convs.lock(cid).locked()
        return info

    @app.get("/viewer/{cid}", response_class=HTMLResponse)
    def viewer(cid: str) -> str:
        if not _ID.match(cid):
            raise ApiError(400, f"conversation id must match {_ID.pattern}")
        return VIEWER.replace("__CID__", cid)

    return app


VIEWER = """<!doctype html>
<html><head><meta charset="utf-8"><title>MegaContext focus — __CID__</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
 #strip { display: flex; height: 36px; border: 1px solid #999; margin: 12px 0; }
 #strip div { height: 100%; }
 .legend span { display: inline-block; width: 14px; height: 14px; vertical-align: middle; margin: 0 4px 0 12px; }
 pre { background: #f5f5f5; padding: 8px; max-height: 240px; overflow: auto; }
</style></head>
<body>
<h2>Conversation <code>__CID__</code></h2>
<div id="stats">loading…</div>
<div id="strip" data-testid="strip"></div>
<div class="legend" id="legend"></div>
<h3>Latest FocusPlans</h3><pre id="plans"></pre>
<script>
const COLORS = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#7f7f7f"];
const color = lv => COLORS[Math.min(lv, COLORS.length - 1)];
document.getElementById("legend").innerHTML = ["raw", "L1 gist", "L2 gist", "L3 gist", "L4 gist"]
  .map((t, i) => `<span style="background:${color(i)}"></span>${t}`).join("");
async function refresh() {
  const r = await fetch("/v1/conversations/__CID__");
  if (!r.ok) { document.getElementById("stats").textContent = "unknown conversation"; return; }
  const info = await r.json();
  const f = info.focus;
  document.getElementById("stats").textContent =
    `${info.tokens.toLocaleString()} tokens, gist levels: ${info.levels.length - 1}, ` +
    `${info.disk_bytes.toLocaleString()} bytes on disk` +
    (f ? `; working context ${f.rows} of ${f.budget} rows` : "; no working context yet") +
    (info.generating ? " — generating…" : "");
  const strip = document.getElementById("strip");
  strip.innerHTML = "";
  if (f) for (const run of f.runs) {
    const d = document.createElement("div");
    d.style.flex = String(run.end - run.start);
    d.style.background = color(run.level);
    d.title = `L${run.level}: tokens ${run.start}–${run.end}`;
    d.className = "run level-" + run.level;
    strip.appendChild(d);
  }
  document.getElementById("plans").textContent = info.plans.slice().reverse().map(p =>
    `step ${p.step} (${p.trigger}): ${p.moves.map(m => m[0] + " L" + m[1] + "#" + m[2]).join(", ")}`).join("\\n") || "none yet";
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""


def serve(host: str = "127.0.0.1", port: int = 8000, stores: str = "stores", model: str | None = None,
          budget: int = 1024) -> None:
    import uvicorn

    config = MegaConfig()
    config = config.with_budget(budget)
    config.validate()
    app = create_app(stores, BaseModel.load(model), config)
    print(f"MegaContext server on http://{host}:{port}/v1 — conversations in {stores}; "
          f"viewer at http://{host}:{port}/viewer/CONVERSATION")
    uvicorn.run(app, host=host, port=port, log_level="warning")
