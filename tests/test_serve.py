"""The OpenAI-compatible server on a tiny model: the official client, restarts, errors, a bounded load test."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

import httpx2 as httpx  # noqa: E402 — the HTTP client the openai package itself uses
import uvicorn  # noqa: E402

from megacontext.config import MegaConfig  # noqa: E402
from megacontext.serve import CONVERSATION_HEADER, create_app  # noqa: E402
from megacontext.store import Store  # noqa: E402


class Server:
    """uvicorn on 127.0.0.1 in a thread, for one test."""

    def __init__(self, stores, base, budget: int = 128, **app_kw) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cfg = MegaConfig()
        self.app = create_app(stores, base, replace(cfg, working=replace(cfg.working, budget=budget)), **app_kw)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.conversations.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def client(server, conversation):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0,
                         default_headers={CONVERSATION_HEADER: conversation})


def test_openai_client_streaming_and_not_and_restart(tmp_path, tiny_base):
    stores = tmp_path / "stores"
    with Server(stores, tiny_base) as srv:
        c = client(srv, "alice")
        assert [m.id for m in c.models.list().data] == [tiny_base.info.name]
        r = c.chat.completions.create(model=tiny_base.info.name, messages=[{"role": "user", "content": "Hello there"}],
                                      max_tokens=6)
        assert r.choices[0].message.role == "assistant" and isinstance(r.choices[0].message.content, str)
        pieces = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model=tiny_base.info.name, messages=[{"role": "user", "content": "And again"}], max_tokens=6, stream=True)]
        assert len(pieces) >= 2
        info = httpx.get(srv.url + "/v1/conversations/alice").json()
        assert info["tokens"] > 0 and info["focus"]["rows"] <= 128 and info["focus"]["runs"][0]["start"] == 0
        page = httpx.get(srv.url + "/viewer/alice").text
        assert "data-testid=\"strip\"" in page and "/v1/conversations/alice" in page
        tokens = info["tokens"]
    with Server(stores, tiny_base) as srv:  # a restart keeps the conversation
        assert httpx.get(srv.url + "/v1/conversations/alice").json()["tokens"] == tokens
        client(srv, "alice").chat.completions.create(model=tiny_base.info.name, max_tokens=3,
                                                     messages=[{"role": "user", "content": "Still there?"}])
        assert httpx.get(srv.url + "/v1/conversations/alice").json()["tokens"] > tokens


def test_errors_are_4xx_json(tmp_path, tiny_base):
    with Server(tmp_path / "stores", tiny_base) as srv:
        post = lambda body, **kw: httpx.post(srv.url + "/v1/chat/completions", json=body, **kw)  # noqa: E731
        cases = [
            (post({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}), 404, "model_not_found"),
            (post({"messages": []}), 400, "invalid_request_error"),
            (post({"messages": [{"role": "wizard", "content": "hi"}]}), 400, "invalid_request_error"),
            (post({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}), 400, "invalid_request_error"),
            (post({"messages": [{"role": "user", "content": "hi"}]}, headers={CONVERSATION_HEADER: "../etc"}), 400,
             "invalid_request_error"),
            (httpx.post(srv.url + "/v1/chat/completions", content=b"{not json",
                        headers={"content-type": "application/json"}), 400, "invalid_request_error"),
            (httpx.get(srv.url + "/v1/conversations/nobody"), 404, "conversation_not_found"),
        ]
        for response, status, code in cases:
            assert response.status_code == status, response.text
            assert response.json()["error"]["code"] == code
        long = post({"messages": [{"role": "user", "content": "x " * 400}], "max_tokens": 2})  # into memory
        assert long.status_code == 200, long.text
        ok = post({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert ok.status_code == 200


def test_bounded_load_50_requests_5_conversations_10_concurrent(tmp_path, tiny_base):
    stores = tmp_path / "stores"
    turns = [(f"conv{i % 5}", f"turn number {i:02d} here") for i in range(50)]
    latencies = []
    with Server(stores, tiny_base) as srv:
        def send(turn):
            cid, text = turn
            t0 = time.perf_counter()
            r = httpx.post(srv.url + "/v1/chat/completions", timeout=120, headers={CONVERSATION_HEADER: cid},
                           json={"messages": [{"role": "user", "content": text}], "max_tokens": 3})
            latencies.append(time.perf_counter() - t0)
            return r.status_code

        with ThreadPoolExecutor(max_workers=10) as pool:
            codes = list(pool.map(send, turns))
    assert codes == [200] * 50
    tok = tiny_base.tokenizer
    for c in range(5):
        with Store.open(stores / f"conv{c}") as s:
            s.check()
            text = tok.decode(s.read_tokens(0, s.num_tokens).tolist())
        for i in range(c, 50, 5):
            assert text.count(f"turn number {i:02d} here") == 1, (c, i)
    (tmp_path / "latencies.json").write_text(json.dumps(latencies))


def test_viewer_shows_the_strip_in_headless_chromium(tmp_path, tiny_base):
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (make test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with Server(tmp_path / "stores", tiny_base) as srv:
        for i in range(6):  # enough history for gists: the strip then has several runs
            client(srv, "viewer").chat.completions.create(model=tiny_base.info.name, max_tokens=4,
                                                          messages=[{"role": "user", "content": f"Tell me story {i}!"}])
        runs = httpx.get(srv.url + "/v1/conversations/viewer").json()["focus"]["runs"]
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page()
            page.goto(srv.url + "/viewer/viewer")
            page.wait_for_selector("[data-testid=strip] .run")
            shown = page.locator("[data-testid=strip] .run").count()
            stats = page.locator("#stats").inner_text()
            page.screenshot(path=str(tmp_path / "viewer.png"))
            browser.close()
    assert shown == len(runs) >= 2
    assert "tokens" in stats and "working context" in stats


def test_ten_streamed_turns_with_full_resends_store_every_message_once(tmp_path, tiny_base):
    """OpenAI clients resend the whole conversation each turn: what was streamed must be what the server
    logged, so only the new user message is appended (issue 21: a streamed reply used to differ from the
    stored one and every earlier message was appended again)."""
    stores = tmp_path / "stores"
    with Server(stores, tiny_base) as srv:
        c = client(srv, "zeb")
        messages = [{"role": "system", "content": "You are terse."}]
        for i in range(10):
            messages.append({"role": "user", "content": f"Zebulon question {i}?"})
            stream = c.chat.completions.create(model=tiny_base.info.name, messages=messages, max_tokens=8,
                                               stream=True, temperature=0.9, seed=i)
            reply = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
            messages.append({"role": "assistant", "content": reply})
    with Store.open(stores / "zeb") as s:
        history = tiny_base.decode(s.read_tokens(0, s.num_tokens).tolist())
        log = json.loads((stores / "zeb" / "messages.json").read_text())["hashes"]
    assert history.count("You are terse.") == 1 and len(log) == len(messages) == 21
    for i in range(10):
        assert history.count(f"Zebulon question {i}?") == 1
    assert history.count("\n\nUser:") == 10
