"""The OpenAI fields through the official client: usage, finish_reason, sampling, stop, text parts,
stream_options, and the fields this server refuses with a 400 naming them."""

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

import httpx2 as httpx  # noqa: E402 — the HTTP client the openai package itself uses

from megacontext.runtime import MegaContext  # noqa: E402
from megacontext.sampling import SamplingConfig  # noqa: E402
from megacontext.store import Store  # noqa: E402
from test_serve import Server, client  # noqa: E402 — the same in-process server as the serving tests

HELLO = [{"role": "user", "content": "Hello there"}]


def turn_text(*messages: dict) -> str:
    """The text a turn appends for `messages` (the plain User:/Assistant: format)."""
    roles = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "".join(f"\n\n{roles[m['role']]}: {m['content']}" for m in messages) + "\n\nAssistant:"


def stored_tokens(srv, cid: str) -> int:
    return httpx.get(f"{srv.url}/v1/conversations/{cid}").json()["tokens"]


def ask(srv, cid: str, messages=HELLO, **kw):
    return client(srv, cid).chat.completions.create(model="megacontext", messages=messages, **kw)


def test_usage_counts_the_tokens_appended_and_length_cuts(tmp_path, tiny_base):
    with Server(tmp_path / "stores", tiny_base) as srv:
        r = ask(srv, "u", max_tokens=2)
        first = len(tiny_base.tokenize(turn_text(*HELLO)))
        assert r.choices[0].finish_reason == "length"
        assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (first, 2, first + 2)
        assert stored_tokens(srv, "u") == first + 2
        extra = r.model_extra["megacontext"]
        assert extra["budget"] == 128 and 0 < extra["rows_used"] <= 128 and extra["conversation"] == "u"

        # the client resends everything: only the new user message (and the turn prefix) is appended
        follow = {"role": "user", "content": "And then?"}
        history = HELLO + [{"role": "assistant", "content": r.choices[0].message.content}, follow]
        r2 = ask(srv, "u", history, max_tokens=3)
        assert r2.usage.prompt_tokens == len(tiny_base.tokenize(turn_text(follow)))
        assert r2.usage.completion_tokens == 3 and r2.choices[0].finish_reason == "length"
        assert stored_tokens(srv, "u") == first + 2 + r2.usage.prompt_tokens + 3

        # streamed: the finish reason on the last choice chunk; with include_usage a usage chunk after it
        chunks = list(ask(srv, "s", max_tokens=2, stream=True, stream_options={"include_usage": True}))
        assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == "length"
        assert all(c.usage is None for c in chunks[:-1])
        assert chunks[-1].choices == []
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (first, 2)
        assert len({c.id for c in chunks}) == 1
        plain = list(ask(srv, "p", max_tokens=2, stream=True))
        assert plain[-1].choices[0].finish_reason == "length" and all(c.usage is None for c in plain)


def test_seed_temperature_and_top_p_are_honoured(tmp_path, tiny_base):
    with Server(tmp_path / "stores", tiny_base) as srv:
        text = lambda cid, **kw: ask(srv, cid, max_tokens=12, **kw).choices[0].message.content  # noqa: E731
        greedy = text("g")  # no temperature: greedy, this server's default
        assert text("g0", temperature=0) == greedy
        a, b = text("a", temperature=1, seed=3), text("b", temperature=1, seed=3)
        assert a == b != greedy
        assert text("c", temperature=1, seed=4) != a
        assert text("d", temperature=1, top_p=1e-6, seed=5) == greedy  # only the top token is left
        streamed = ask(srv, "e", max_tokens=12, temperature=1, seed=3, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == a


def test_stop_strings_cut_the_answer(tmp_path, tiny_base):
    with Server(tmp_path / "stores", tiny_base) as srv:
        full = ask(srv, "full", max_tokens=12, temperature=1, seed=3).choices[0].message.content
        i = next(i for i, ch in enumerate(full) if ch.isascii() and ch.isalnum() and full[:i].strip()
                 and full.index(ch) == i)
        for cid, stop in (("one", full[i]), ("list", ["never-there", full[i]])):
            r = ask(srv, cid, max_tokens=12, temperature=1, seed=3, stop=stop)
            assert r.choices[0].message.content == full[:i].strip() and r.choices[0].finish_reason == "stop"
            assert r.usage.completion_tokens < 12
        chunks = list(ask(srv, "stream", max_tokens=12, temperature=1, seed=3, stop=full[i], stream=True))
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_the_route_passes_sampling_and_both_stop_rules(tmp_path, tiny_base, monkeypatch):
    seen = {}
    generate = MegaContext.generate

    def spy(self, prompt, **kw):
        seen.update(kw)
        return generate(self, prompt, **kw)

    monkeypatch.setattr(MegaContext, "generate", spy)
    with Server(tmp_path / "stores", tiny_base) as srv:
        ask(srv, "x", max_tokens=2, temperature=0.7, top_p=0.9, seed=11, stop=["END", "###"])
    assert seen["sampling"] == SamplingConfig(temperature=0.7, top_p=0.9, seed=11)
    assert list(seen["stop"]) == ["\nUser:", "END", "###"]


def test_content_as_text_parts(tmp_path, tiny_base):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}]
    with Server(tmp_path / "stores", tiny_base) as srv:
        r = ask(srv, "parts", parts, max_tokens=6)
        same = ask(srv, "string", [{"role": "user", "content": "Hello\nthere"}], max_tokens=6)
        assert r.choices[0].message.content == same.choices[0].message.content
        assert r.usage.prompt_tokens == same.usage.prompt_tokens == len(tiny_base.tokenize(
            turn_text({"role": "user", "content": "Hello\nthere"})))


REFUSED = [
    ({"temperature": "hot"}, "temperature"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": -1}, "frequency_penalty"),
    ({"logit_bias": {"50": 10}}, "logit_bias"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"seed": "42"}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": 3}, "stop"),
    ({"stop": ""}, "stop"),
    ({"n": 3}, "n"),
    ({"n": 0}, "n"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "logprobs"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
]


def test_unsupported_or_bad_fields_are_a_400_naming_the_field(tmp_path, tiny_base):
    with Server(tmp_path / "stores", tiny_base) as srv:
        c = client(srv, "refused")
        for fields, name in REFUSED:
            body = {"model": "megacontext", "messages": HELLO, "max_tokens": 2, **fields}
            with pytest.raises(openai.BadRequestError) as err:
                c.chat.completions.create(**body)
            assert err.value.status_code == 400
            assert f"`{name}`" in err.value.body["message"], (fields, err.value.body)
            assert err.value.body["type"] == "invalid_request_error"
        assert httpx.get(srv.url + "/v1/conversations/refused").status_code == 404  # nothing was stored
        # the harmless forms are accepted
        r = ask(srv, "ok", max_tokens=2, n=1, response_format={"type": "text"}, logprobs=False, stop=[],
                temperature=None, seed=None, presence_penalty=0, frequency_penalty=0.0)
        assert r.choices[0].finish_reason == "length" and len(r.choices) == 1


def test_developer_role_is_system(tmp_path, tiny_base):
    with Server(tmp_path / "stores", tiny_base) as srv:
        ask(srv, "dev", messages=[{"role": "developer", "content": "Be brief."}, *HELLO], max_tokens=2)
    with Store.open(tmp_path / "stores" / "dev") as s:
        assert tiny_base.decode(s.read_tokens(0, s.num_tokens).tolist()).startswith("\n\nSystem: Be brief.")


def test_a_20k_token_message_goes_into_memory_and_its_fact_stays(tmp_path, tiny_base):
    """Issue 21 item 4: a pasted document longer than the budget is appended in pieces, not refused."""
    document = ("Filler sentence about nothing in particular. " * 450)[:20_000] + " The vault code is 48213."
    with Server(tmp_path / "stores", tiny_base) as srv:
        messages = [{"role": "user", "content": document}]
        r = ask(srv, "doc", messages=messages, max_tokens=3)
        assert r.usage.prompt_tokens > 20_000 and r.megacontext["rows_used"] <= 128
        messages += [{"role": "assistant", "content": r.choices[0].message.content},
                     {"role": "user", "content": "What is the vault code?"}]
        r2 = ask(srv, "doc", messages=messages, max_tokens=3)
        assert r2.usage.prompt_tokens < 50  # only the new question was appended (43 tokens with its framing)
    with Store.open(tmp_path / "stores" / "doc") as s:
        history = tiny_base.decode(s.read_tokens(0, s.num_tokens).tolist())
    assert history.count("The vault code is 48213.") == 1 and history.count("What is the vault code?") == 1
