"""The FastAPI app: routes for models, chat completions (SSE or not), conversation stats and the viewer."""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.errors import MegaContextError
from megacontext.prompts import for_model, get as turn_format_named
from megacontext.serve.conversations import CONVERSATION_HEADER, MESSAGES, Conversations, message_hash, new_text
from megacontext.serve.protocol import ApiError, Completion, parse_request
from megacontext.serve.security import (
    LOOPBACK, Access, Guard, allowed_hosts, host_name, redact, requested_conversation,
)
from megacontext.serve.viewer import VIEWER
from megacontext.store import Store
from megacontext.views import inspect_store, read_trace
from megacontext.working import focus_runs, focus_strip


def create_app(stores: str | Path, base: BaseModel, config: MegaConfig = MegaConfig(), *,
               api_key: str | None = None, host: str = "127.0.0.1", allow_hosts: Sequence[str] = (),
               turn_format: str = "plain") -> FastAPI:
    """The app serving the conversations under `stores`.

    `turn_format`: how turns are written into the stores (`prompts.FORMATS`; `serve` picks the model's).

    `api_key`: when set, every route wants `Authorization: Bearer KEY` (the viewer also `?key=KEY`).
    `host`: the address the server is bound to; with `allow_hosts` it decides which `Host` headers are
    served (see `security.allowed_hosts`).
    """
    access = Access(api_key, allowed_hosts(host, allow_hosts))
    root = Path(stores)
    root.mkdir(parents=True, exist_ok=True)
    fmt = turn_format_named(turn_format)
    fmt.check(base)
    convs = Conversations(root, base, config, fmt)
    app = FastAPI(title="MegaContext", description=__doc__)
    app.add_middleware(Guard, access=access)
    app.state.conversations = convs
    model_name = base.info.name

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(ApiError(exc.status, redact(exc.message, root), exc.code).body(), status_code=exc.status)

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "megacontext"}]}

    def conversation_id(request: Request, body: dict) -> str:
        cid = requested_conversation(request.headers.get(CONVERSATION_HEADER), body)
        convs.path(cid)  # inside --stores, or 400
        return cid

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "the request body is not valid JSON") from None
        req = parse_request(body, model_name)
        messages = req.messages
        cid = conversation_id(request, body)
        reply = Completion(model_name, cid, req.include_usage)
        pieces: queue.Queue = queue.Queue()
        outcome: dict = {}

        def work() -> None:
            try:
                with convs.lock(cid):
                    mc = convs.session(cid, create=True)
                    prompt, log = new_text(mc, messages, convs.turn_format)
                    answer = mc.generate(prompt.text, max_new_tokens=req.max_tokens, stop=[*prompt.stop, *req.stop],
                                         on_token=pieces.put, sampling=req.sampling)
                    mc.store.write_json(MESSAGES, {"hashes": log + [message_hash(
                        {"role": "assistant", "content": answer.text})]})
                    outcome["answer"] = answer
            except (ValueError, MegaContextError) as exc:  # streamed errors too: no server paths
                outcome["error"] = ApiError(400, redact(str(exc), root))
            except Exception as exc:  # noqa: BLE001 — reported to the client, never a crash of the server
                outcome["error"] = ApiError(500, redact(f"internal error: {exc}", root), "internal_error")
            finally:
                pieces.put(None)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        if not req.stream:
            import anyio

            await anyio.to_thread.run_sync(thread.join)
            if "error" in outcome:
                raise outcome["error"]
            return reply.response(outcome["answer"])

        def events():
            yield reply.chunk({"role": "assistant", "content": ""})
            while True:
                piece = pieces.get()
                if piece is None:
                    break
                yield reply.chunk({"content": piece})
            thread.join()
            yield from reply.fail(outcome["error"]) if "error" in outcome else reply.end(outcome["answer"])

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/v1/conversations/{cid}")
    def conversation(cid: str) -> dict:
        """Read-only: the store is opened without the writer lock, so another process may write it."""
        path = convs.path(cid, exists=True)
        try:
            with Store.open(path) as store:
                info = inspect_store(store)
                info["plans"] = read_trace(store, last=10)  # damaged lines skipped (warned)
        except MegaContextError as exc:
            raise ApiError(500, str(exc), "store_error") from None
        info["store"] = cid  # never the server's path
        live = convs.live(cid)  # this server's own session, if a chat opened one: its live working context
        wc = live.current if live is not None else None
        if wc is not None:
            info["focus"] = {"budget": live.budget, "num_tokens": wc.num_tokens, "rows": wc.cost,
                             "strip": focus_strip(wc, 200), "runs": focus_runs(wc)}
        info["generating"] = convs.lock(cid).locked()
        return info

    @app.get("/viewer/{cid}", response_class=HTMLResponse)
    def viewer(cid: str) -> str:
        convs.path(cid)  # a plain name inside --stores (it is also written into the page), or 400
        return VIEWER.replace("__CID__", cid)

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, stores: str = "stores", model: str | None = None,
          budget: int = 1024, api_key: str | None = None, allow_hosts: Sequence[str] = (),
          turn_format: str | None = None) -> None:
    """Run the server; `api_key` defaults to the `MEGACONTEXT_API_KEY` environment variable; `turn_format`
    to the model's measured one (`prompts.for_model`)."""
    import uvicorn

    api_key = api_key or os.environ.get("MEGACONTEXT_API_KEY") or None
    Access(api_key)  # a bad key is refused before the model loads
    fmt = for_model(model, turn_format)
    config = MegaConfig().with_budget(budget)
    config.validate()  # flags before the model loads, then the budget against the model's positions
    base = BaseModel.load(model)
    config.validate(base.info.max_positions)
    app = create_app(stores, base, config, api_key=api_key, host=host, allow_hosts=allow_hosts,
                     turn_format=fmt.name)
    if api_key is None and host_name(host) not in LOOPBACK:
        print(f"warning: serving on {host} without an API key: anyone who can reach port {port} reads and writes "
              "every conversation (set --api-key or MEGACONTEXT_API_KEY)", file=sys.stderr)
    print(f"MegaContext server on http://{host}:{port}/v1 — conversations in {stores}; "
          f"viewer at http://{host}:{port}/viewer/CONVERSATION" + ("?key=KEY" if api_key else ""))
    uvicorn.run(app, host=host, port=port, log_level="warning")
