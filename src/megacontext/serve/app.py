"""The FastAPI app: routes for models, chat completions (SSE or not), conversation stats and the viewer."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.errors import MegaContextError
from megacontext.serve.conversations import (
    CONVERSATION_ID, CONVERSATION_HEADER, MESSAGES, Conversations, message_hash, new_text,
)
from megacontext.serve.protocol import ApiError, Completion, parse_request
from megacontext.serve.viewer import VIEWER
from megacontext.views import inspect_store
from megacontext.working import focus_runs, focus_strip


def create_app(stores: str | Path, base: BaseModel, config: MegaConfig = MegaConfig()) -> FastAPI:
    root = Path(stores)
    root.mkdir(parents=True, exist_ok=True)
    convs = Conversations(root, base, config)
    app = FastAPI(title="MegaContext", description=__doc__)
    app.state.conversations = convs
    model_name = base.info.name

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "megacontext"}]}

    def conversation_id(request: Request, body: dict) -> str:
        cid = request.headers.get(CONVERSATION_HEADER) or (body.get("conversation") if isinstance(body, dict)
                                                             else None) or "default"
        if not isinstance(cid, str) or not CONVERSATION_ID.match(cid):
            raise ApiError(400, f"conversation id must match {CONVERSATION_ID.pattern}")
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
                    prompt, log = new_text(mc, messages)
                    answer = mc.generate(prompt, max_new_tokens=req.max_tokens, stop=["\nUser:", *req.stop],
                                         on_token=pieces.put, sampling=req.sampling)
                    mc.store.write_json(MESSAGES, {"hashes": log + [message_hash(
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
        if not CONVERSATION_ID.match(cid):
            raise ApiError(400, f"conversation id must match {CONVERSATION_ID.pattern}")
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
        if not CONVERSATION_ID.match(cid):
            raise ApiError(400, f"conversation id must match {CONVERSATION_ID.pattern}")
        return VIEWER.replace("__CID__", cid)

    return app


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
