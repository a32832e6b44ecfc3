"""Serving safely: conversation ids never leave `--stores`, the API key, Host / Origin / Content-Type
checks, read-only GETs that take no writer lock, and no server paths in responses."""

import http.client
import json
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import replace

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from starlette.datastructures import Headers  # noqa: E402

from megacontext.config import MegaConfig  # noqa: E402
from megacontext.runtime import MegaContext  # noqa: E402
from megacontext.serve import CONVERSATION_HEADER, create_app  # noqa: E402
from megacontext.serve.protocol import ApiError  # noqa: E402
from megacontext.serve.security import (  # noqa: E402
    LOOPBACK, Access, allowed_hosts, check_conversation_id, conversation_path, host_name, redact,
    requested_conversation,
)
from megacontext.store import Store  # noqa: E402

CFG = replace(MegaConfig(), working=replace(MegaConfig().working, budget=128))
KEY = "sk-test-0123456789"
HI = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
BAD_IDS = [".", "..", "", "../x", "../../etc", "a/b", "/abs", "a\\b", "..\\x", "a\x00b", ".hidden", "..%2F",
           "%2e%2e", "abc\n", "x" * 65, "a b", "é"]


def app_client(tmp_path, base, **kw) -> TestClient:
    return TestClient(create_app(tmp_path / "stores", base, CFG, **kw), base_url="http://127.0.0.1:8000")


def make_store(tmp_path, base, cid: str, text: str = "Hello there, this is the history. " * 4) -> int:
    with MegaContext.open(tmp_path / "stores" / cid, base, CFG, create=True) as mc:
        mc.append(text)
        return mc.store.num_tokens


def tree(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --- ids: pure ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cid", BAD_IDS + [None, 5, ["a"], {"a": 1}])
def test_a_conversation_id_that_is_not_a_plain_name_is_refused(tmp_path, cid):
    with pytest.raises(ApiError) as err:
        conversation_path(tmp_path, cid)
    assert err.value.status == 400 and "plain name" in err.value.message


@pytest.mark.parametrize("cid", ["default", "alice", "a.b", "conv-1_x", "A" * 64, "x..y", "v1.2.3"])
def test_a_plain_name_is_a_direct_child_of_the_stores_folder(tmp_path, cid):
    assert check_conversation_id(cid) == cid
    assert conversation_path(tmp_path, cid) == tmp_path.resolve() / cid


def test_a_symlink_out_of_the_stores_folder_is_refused(tmp_path):
    root, outside = tmp_path / "stores", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "inside").symlink_to(root / "real")
    with pytest.raises(ApiError, match="inside the stores folder"):
        conversation_path(root, "escape")
    assert conversation_path(root, "inside") == root.resolve() / "real"


def test_the_requested_conversation_header_then_body_then_default():
    assert requested_conversation(None, {}) == "default"
    assert requested_conversation(None, {"conversation": None}) == "default"
    assert requested_conversation(None, {"conversation": "bob"}) == "bob"
    assert requested_conversation("carol", {"conversation": "bob"}) == "carol"
    for header, body in [("", {}), (None, {"conversation": ""}), ("..", {"conversation": "ok"}),
                         (None, {"conversation": 7})]:
        with pytest.raises(ApiError):
            requested_conversation(header, body)


def test_redact_turns_store_paths_into_ids(tmp_path):
    root = tmp_path / "stores"
    msg = f"{root.resolve()}/alice: another process (pid 7) is writing to this store; see {root.resolve()}"
    assert redact(msg, root) == "alice: another process (pid 7) is writing to this store; see --stores"


# --- hosts and access: pure --------------------------------------------------------------------------

def test_host_names_and_the_allowed_set():
    assert [host_name(h) for h in ["127.0.0.1:8000", "LocalHost", "[::1]:8000", "localhost.:80", "[::1",
                                   "proxy.example"]] == ["127.0.0.1", "localhost", "::1", "localhost", "",
                                                         "proxy.example"]
    assert allowed_hosts("127.0.0.1") == LOOPBACK
    assert allowed_hosts("localhost", ["Proxy.Example:443"]) == LOOPBACK | {"proxy.example"}
    assert allowed_hosts("192.168.1.5") == LOOPBACK | {"192.168.1.5"}
    assert allowed_hosts("0.0.0.0") is None and allowed_hosts("::") is None
    assert allowed_hosts("0.0.0.0", ["proxy.example"]) == LOOPBACK | {"proxy.example"}
    assert allowed_hosts("127.0.0.1", ["*"]) is None


def refusal(access: Access, method="GET", path="/v1/models", query=b"", **headers) -> tuple[int, str] | None:
    h = {"host": "127.0.0.1:8000"} | {k.replace("_", "-"): v for k, v in headers.items()}
    err = access.refusal(method, path, Headers(h), query)
    return None if err is None else (err.status, err.code)


def test_access_refusals_in_order_host_origin_key_content_type():
    a = Access(KEY)
    ok = {"authorization": f"Bearer {KEY}"}
    assert refusal(a, **ok) is None
    assert refusal(a, host="attacker.example", **ok) == (400, "invalid_host")
    assert refusal(a, origin="http://attacker.example", **ok) == (403, "invalid_origin")
    assert refusal(a, origin="null", **ok) == (403, "invalid_origin")
    assert refusal(a, origin="http://[::1", **ok) == (403, "invalid_origin")
    assert refusal(a, origin="http://localhost:5173", **ok) is None
    assert refusal(a) == (401, "invalid_api_key")
    assert refusal(a, authorization="Bearer wrong") == (401, "invalid_api_key")
    assert refusal(a, authorization=KEY) == (401, "invalid_api_key")
    assert refusal(a, authorization=f"Basic {KEY}") == (401, "invalid_api_key")
    assert refusal(a, authorization=f"bearer {KEY}") is None
    assert refusal(a, path="/viewer/alice", query=f"key={KEY}".encode()) is None
    assert refusal(a, path="/viewer/alice", query=b"key=wrong") == (401, "invalid_api_key")
    assert refusal(a, path="/v1/models", query=f"key={KEY}".encode()) == (401, "invalid_api_key")
    assert refusal(a, path="/viewer/a/../../v1/conversations/b", query=f"key={KEY}".encode()) == (401,
                                                                                                  "invalid_api_key")
    assert refusal(a, "POST", "/v1/chat/completions", **ok) == (415, "unsupported_media_type")
    assert refusal(a, "POST", "/v1/chat/completions", content_type="text/plain", **ok) == (415,
                                                                                         "unsupported_media_type")
    assert refusal(a, "POST", "/v1/chat/completions", content_type="Application/JSON; charset=utf-8", **ok) is None
    anyone = Access(None, None)  # bound to 0.0.0.0, no key
    assert refusal(anyone, host="myhost:8000") is None
    assert refusal(anyone, host="myhost:8000", origin="http://myhost:8000") is None
    assert refusal(anyone, host="myhost:8000", origin="http://attacker.example") == (403, "invalid_origin")
    for bad in ["", " k", "k ", "clé", "a\nb"]:
        with pytest.raises(ValueError, match="--api-key"):
            Access(bad)


# --- the app: containment ----------------------------------------------------------------------------

def test_bad_ids_through_header_body_and_paths_are_refused_and_create_nothing(tmp_path, tiny_base):
    c = app_client(tmp_path, tiny_base)
    make_store(tmp_path, tiny_base, "alice")
    before = tree(tmp_path)
    for cid in BAD_IDS:
        r = c.post("/v1/chat/completions", json=HI | {"conversation": cid})
        assert r.status_code == 400, (cid, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error" and "plain name" in r.json()["error"]["message"]
        if "\x00" not in cid and "\n" not in cid and cid.isascii():  # what HTTP can carry in a header
            r = c.post("/v1/chat/completions", json=HI, headers={CONVERSATION_HEADER: cid})
            assert r.status_code == 400, (cid, r.text)
    # FastAPI decodes path parameters: every spelling of a dot name, a separator or NUL is refused
    for raw in ["%2e%2e", "%2E%2E", ".%2e", "%2e", "%2ehidden", ".hidden", "a%5Cb", "%5C", "%00", "a%00b",
                "..%5C..", "%2e%2e%5c"]:
        for route in ["/v1/conversations/", "/viewer/"]:
            r = c.get(route + raw)
            assert r.status_code == 400, (route, raw, r.text)
            assert "plain name" in r.json()["error"]["message"]
    for raw in ["..%2F", "%2e%2e%2f%2e%2e", "..%2Fstores%2Falice", "a%2Fb"]:  # a decoded `/`: no route matches
        for route in ["/v1/conversations/", "/viewer/"]:
            assert c.get(route + raw).status_code == 404, (route, raw)
    assert tree(tmp_path) == before
    assert c.get("/v1/conversations/alice").status_code == 200


@contextmanager
def running(app):
    """`app` under uvicorn on a free loopback port, in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.conversations.close()


def test_raw_dot_dot_paths_through_a_real_server(tmp_path, tiny_base):
    """HTTP clients normalise `..` away; a hostile one sends it raw."""
    app = create_app(tmp_path / "stores", tiny_base, CFG)
    make_store(tmp_path, tiny_base, "alice")
    with running(app) as port:
        for path in ["/v1/conversations/..", "/viewer/..", "/v1/conversations/.", "/viewer/%2e%2e",
                     "/v1/conversations/%2e%2e"]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            r = conn.getresponse()
            body = json.loads(r.read())
            conn.close()
            assert r.status == 400 and "plain name" in body["error"]["message"], (path, body)


# --- the app: the API key ----------------------------------------------------------------------------

def test_with_a_key_every_route_wants_it(tmp_path, tiny_base):
    c = app_client(tmp_path, tiny_base, api_key=KEY)
    make_store(tmp_path, tiny_base, "alice")
    routes = [("GET", "/v1/models"), ("GET", "/v1/conversations/alice"), ("GET", "/viewer/alice"),
              ("POST", "/v1/chat/completions"), ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/nope")]
    for auth in [None, "Bearer wrong", f"Bearer {KEY}x", f"Basic {KEY}", KEY]:
        headers = {"authorization": auth} if auth else {}
        for method, path in routes:
            r = c.request(method, path, headers=headers, json=HI if method == "POST" else None)
            assert r.status_code == 401, (auth, path, r.text)
            assert r.json() == {"error": {"message": r.json()["error"]["message"], "type": "invalid_request_error",
                                          "code": "invalid_api_key"}}
            assert r.headers["www-authenticate"] == "Bearer"
    good = {"authorization": f"Bearer {KEY}"}
    assert c.get("/v1/models", headers=good).json()["data"][0]["id"] == tiny_base.info.name
    assert c.get("/v1/conversations/alice", headers=good).json()["store"] == "alice"
    assert "data-testid=\"strip\"" in c.get("/viewer/alice", headers=good).text
    assert c.post("/v1/chat/completions", json=HI | {"conversation": "bob"}, headers=good).status_code == 200
    assert c.get("/nope", headers=good).status_code == 404
    # the viewer alone takes the key in its URL, and its page sends it on as a Bearer header
    page = c.get(f"/viewer/alice?key={KEY}")
    assert page.status_code == 200
    assert 'Authorization: "Bearer " + KEY' in page.text and 'fetch("/v1/conversations/alice", AUTH)' in page.text
    assert '<meta name="referrer" content="no-referrer">' in page.text
    assert c.get(f"/v1/conversations/alice?key={KEY}").status_code == 401
    assert c.get(f"/v1/models?key={KEY}").status_code == 401
    assert c.get("/viewer/alice?key=wrong").status_code == 401


def test_the_official_client_with_and_without_the_key(tmp_path, tiny_base):
    name = tiny_base.info.name
    hello = [{"role": "user", "content": "Hello there"}]
    with running(create_app(tmp_path / "keyed", tiny_base, CFG, api_key=KEY)) as port:
        url = f"http://127.0.0.1:{port}/v1"
        good = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
        assert [m.id for m in good.models.list().data] == [name]
        r = good.chat.completions.create(model=name, messages=hello, max_tokens=3)
        assert r.choices[0].message.role == "assistant"
        pieces = list(good.chat.completions.create(model=name, messages=hello, max_tokens=3, stream=True))
        assert len(pieces) >= 2
        for key in ["wrong", "none"]:
            bad = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as err:
                bad.models.list()
            assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
            with pytest.raises(openai.AuthenticationError):
                bad.chat.completions.create(model=name, messages=hello, max_tokens=3)
            with pytest.raises(openai.AuthenticationError):
                bad.chat.completions.create(model=name, messages=hello, max_tokens=3, stream=True)
    with running(create_app(tmp_path / "open", tiny_base, CFG)) as port:
        anyone = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="anything", max_retries=0)
        assert [m.id for m in anyone.models.list().data] == [name]
        assert anyone.chat.completions.create(model=name, messages=hello, max_tokens=3).choices[0].message.role \
            == "assistant"


def test_serve_takes_the_key_from_the_environment_and_warns_off_loopback(tmp_path, tiny_model_dir, monkeypatch,
                                                                           capsys):
    import uvicorn as uv

    from megacontext.serve import serve

    apps = []
    monkeypatch.setattr(uv, "run", lambda app, **kw: apps.append((app, kw)))
    monkeypatch.setenv("MEGACONTEXT_API_KEY", KEY)
    serve("127.0.0.1", 8123, str(tmp_path / "s1"), str(tiny_model_dir), 128)
    assert "warning" not in capsys.readouterr().err
    c = TestClient(apps[-1][0], base_url="http://127.0.0.1:8123")
    assert c.get("/v1/models").status_code == 401
    assert c.get("/v1/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    monkeypatch.delenv("MEGACONTEXT_API_KEY")
    serve("0.0.0.0", 8124, str(tmp_path / "s2"), str(tiny_model_dir), 128, allow_hosts=["proxy.example"])
    err = capsys.readouterr().err
    assert "warning" in err and "without an API key" in err
    c = TestClient(apps[-1][0], base_url="http://proxy.example:8124")
    assert c.get("/v1/models").status_code == 200
    assert c.get("/v1/models", headers={"host": "attacker.example"}).status_code == 400
    assert apps[-1][1]["host"] == "0.0.0.0"
    with pytest.raises(ValueError, match="--api-key"):
        serve("127.0.0.1", 8125, str(tmp_path / "s3"), str(tiny_model_dir), 128, api_key=" spaced ")


def test_cli_serve_flags(monkeypatch, capsys):
    import megacontext.serve as serve_pkg
    from megacontext.cli import main

    calls = []
    monkeypatch.setattr(serve_pkg, "serve", lambda *a, **kw: calls.append((a, kw)))
    assert main(["serve", "--host", "0.0.0.0", "--api-key", KEY, "--allow-host", "a.example",
                 "--allow-host", "b.example", "--turn-format", "plain"]) == 0
    assert calls[-1][1] == {"api_key": KEY, "allow_hosts": ["a.example", "b.example"], "turn_format": "plain"}
    assert main(["serve"]) == 0
    assert calls[-1][1] == {"api_key": None, "allow_hosts": [], "turn_format": None}
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--api-key" in out and "--allow-host" in out and "MEGACONTEXT_API_KEY" in out


# --- the app: Host, Origin, Content-Type --------------------------------------------------------------

def test_dns_rebinding_and_cross_site_posts_are_refused(tmp_path, tiny_base):
    c = app_client(tmp_path, tiny_base)
    make_store(tmp_path, tiny_base, "alice")
    before = tree(tmp_path)
    r = c.get("/v1/conversations/alice", headers={"host": "attacker.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"
    assert c.get("/viewer/alice", headers={"host": "attacker.example:8000"}).status_code == 400
    for host in ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"]:
        assert c.get("/v1/models", headers={"host": host}).status_code == 200, host
    # a page on another site: a "simple" text/plain POST (no preflight), with and without its Origin
    payload = json.dumps(HI | {"conversation": "victim"})
    r = c.post("/v1/chat/completions", content=payload,
               headers={"content-type": "text/plain", "origin": "http://attacker.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_origin"
    for kind in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]:
        r = c.post("/v1/chat/completions", content=payload, headers={"content-type": kind} if kind else {})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", kind
    r = c.post("/v1/chat/completions", json=HI, headers={"origin": "http://attacker.example"})
    assert r.status_code == 403
    assert c.post("/v1/chat/completions", json=HI, headers={"origin": "null"}).status_code == 403
    assert tree(tmp_path) == before  # nothing was written
    r = c.post("/v1/chat/completions", content=payload,
               headers={"content-type": "application/json; charset=utf-8", "origin": "http://127.0.0.1:8000"})
    assert r.status_code == 200, r.text


def test_allowed_hosts_for_a_reverse_proxy_and_a_wildcard_bind(tmp_path, tiny_base):
    proxied = app_client(tmp_path / "a", tiny_base, allow_hosts=["chat.example.org"])
    assert proxied.get("/v1/models", headers={"host": "chat.example.org"}).status_code == 200
    assert proxied.get("/v1/models", headers={"host": "chat.example.org",
                                              "origin": "https://chat.example.org"}).status_code == 200
    assert proxied.get("/v1/models", headers={"host": "other.example.org"}).status_code == 400
    anyone = app_client(tmp_path / "b", tiny_base, host="0.0.0.0")
    assert anyone.get("/v1/models", headers={"host": "10.0.0.7:8000"}).status_code == 200
    assert anyone.get("/v1/models", headers={"host": "10.0.0.7:8000", "origin": "http://evil.example"}
                      ).status_code == 403
    narrowed = app_client(tmp_path / "c", tiny_base, host="0.0.0.0", allow_hosts=["10.0.0.7"])
    assert narrowed.get("/v1/models", headers={"host": "10.0.0.7:8000"}).status_code == 200
    assert narrowed.get("/v1/models", headers={"host": "rebound.example:8000"}).status_code == 400


# --- the app: read-only GETs, no server paths ---------------------------------------------------------

def test_get_conversation_takes_no_writer_lock_and_shows_no_paths(tmp_path, tiny_base):
    app = create_app(tmp_path / "stores", tiny_base, CFG)
    c = TestClient(app, base_url="http://127.0.0.1:8000")
    tokens = make_store(tmp_path, tiny_base, "alice")
    for _ in range(3):
        r = c.get("/v1/conversations/alice")
        assert r.status_code == 200 and r.json()["tokens"] == tokens
        assert c.get("/viewer/alice").status_code == 200
    assert r.json()["store"] == "alice" and str(tmp_path) not in r.text
    assert app.state.conversations.live("alice") is None
    # another process may write the store meanwhile (the server has served GETs and keeps serving them)
    with MegaContext.open(tmp_path / "stores" / "alice", tiny_base, CFG) as writer:
        assert writer.store.writable
        writer.append(" More history, written by someone else.")
        grown = writer.store.num_tokens
        r = c.get("/v1/conversations/alice")
        assert r.status_code == 200 and r.json()["tokens"] == grown > tokens
        # the server cannot write it now: the error names the conversation, not the server's path
        r = c.post("/v1/chat/completions", json=HI | {"conversation": "alice"})
        assert r.status_code >= 400 and "alice" in r.json()["error"]["message"], r.text
        assert str(tmp_path) not in r.text
    with Store.open(tmp_path / "stores" / "alice", writable=True):  # and nobody kept the lock
        pass


def test_a_corrupt_store_is_a_json_error_without_paths(tmp_path, tiny_base):
    c = app_client(tmp_path, tiny_base)
    make_store(tmp_path, tiny_base, "broken")
    (tmp_path / "stores" / "broken" / "meta.json").write_text("{not json")
    r = c.get("/v1/conversations/broken")
    assert r.status_code == 500 and r.json()["error"]["code"] == "store_error"
    assert "broken/meta.json" in r.json()["error"]["message"] and str(tmp_path) not in r.text
    assert c.get("/v1/conversations/nobody").json()["error"]["code"] == "conversation_not_found"

