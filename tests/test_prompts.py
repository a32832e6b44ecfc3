"""Turn formats (issue 17 item 3, issue 21 item 5): plain and the model's chat template render turns that
concatenate into the template over the whole conversation, with the format's stop strings; the
registry picks a format per model; `--turn-format` reaches ask, chat and serve."""

import io
import json
import shutil

import pytest

from megacontext import models, prompts
from megacontext.cli import build_parser, main
from megacontext.prompts import FORMATS, Prompt, for_model

PLAIN, TEMPLATE = FORMATS["plain"], FORMATS["chat_template"]
# ChatML with a default system prompt, as SmolLM2's and Qwen2.5's templates
CHATML = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
          "<|im_start|>system\nBe brief.<|im_end|>\n{% endif %}"
          "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
U1, A1, U2, A2, U3 = ("First question?", "First answer.", "Second question?", "Second answer.", "Third?")


@pytest.fixture(scope="module")
def templated_dir(tmp_path_factory, tiny_model_dir):
    """The tiny random model with a chat template on its tokenizer."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("templated") / "tiny-chat"
    shutil.copytree(tiny_model_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = CHATML
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def templated_base(templated_dir):
    from megacontext.base import BaseModel

    return BaseModel.load(templated_dir)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def stored_text(base, store) -> str:
    from megacontext.store import Store

    with Store.open(store) as s:
        return base.decode(s.read_tokens(0, s.num_tokens).tolist())


# --- rendering --------------------------------------------------------------------------------------

def test_plain_writes_todays_strings():
    msgs = [{"role": "system", "content": "Be terse."}, user("hi")]
    assert PLAIN.turn(None, msgs, after_reply=False) == Prompt("\n\nSystem: Be terse.\n\nUser: hi\n\nAssistant:",
                                                               ("\nUser:",))
    assert PLAIN.turn(None, [user("hi")], after_reply=True).text == "\n\nUser: hi\n\nAssistant:"
    assert PLAIN.question(None, "Who?") == Prompt("\n\nQuestion: Who?\nAnswer:", ("\n",))
    PLAIN.check(None)  # any model


def test_the_template_renders_the_tokenizers_chat_template(templated_base):
    assert templated_base.render_chat([user("hi")]) == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                                                        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert templated_base.render_chat([user("hi")], add_generation_prompt=False).endswith("hi<|im_end|>\n")
    first = TEMPLATE.turn(templated_base, [user(U1)], after_reply=False)
    assert first == Prompt(templated_base.render_chat([user(U1)]), ("<|im_end|>",))
    assert TEMPLATE.question(templated_base, U1) == first  # a one-shot question is a first turn
    after = TEMPLATE.turn(templated_base, [user(U2)], after_reply=True)
    assert after == Prompt(f"<|im_end|>\n<|im_start|>user\n{U2}<|im_end|>\n<|im_start|>assistant\n", ("<|im_end|>",))


def test_template_turns_concatenate_into_the_template_over_all_messages(templated_base):
    system = {"role": "system", "content": "You are terse."}
    turns = [([system, user(U1)], A1), ([user(U2)], A2), ([user(U3)], None)]
    history, messages = "", []
    for i, (new, answer) in enumerate(turns):
        history += TEMPLATE.turn(templated_base, new, after_reply=i > 0).text
        messages += new
        assert history == templated_base.render_chat(messages)  # the store up to the answer = the template
        if answer is not None:
            history += answer
            messages.append(assistant(answer))
    assert history.count("You are terse.") == 1 and "Be brief." not in history
    ids = templated_base.tokenize  # and token by token, as the store appends them
    pieces = [TEMPLATE.turn(templated_base, [system, user(U1)], False).text, A1,
              TEMPLATE.turn(templated_base, [user(U2)], True).text]
    assert sum((ids(p) for p in pieces), []) == ids(templated_base.render_chat([system, user(U1), assistant(A1),
                                                                               user(U2)]))


def test_a_template_that_rewrites_earlier_turns_keeps_what_follows_the_answer():
    class Counting:  # a header that changes with the length of the conversation
        def render_chat(self, messages, add_generation_prompt=True):
            body = "".join(f"<{m['role']}>{m['content']}</>" for m in messages)
            return f"[{len(messages)} messages]" + body + ("<assistant>" if add_generation_prompt else "")

    p = TEMPLATE.turn(Counting(), [user("q")], after_reply=True)
    assert p == Prompt("</><user>q</><assistant>", ("</>",))


def test_no_template_is_one_clear_error(tiny_base):
    assert tiny_base.render_chat([user("hi")]) is None
    for call in (lambda: TEMPLATE.check(tiny_base), lambda: TEMPLATE.question(tiny_base, "Who?"),
                 lambda: TEMPLATE.turn(tiny_base, [user("hi")], after_reply=True)):
        with pytest.raises(ValueError, match="--turn-format chat_template: .*no chat template"):
            call()


# --- the choice ---------------------------------------------------------------------------------------

def test_the_registry_chooses_the_format_and_the_flag_overrides_it(tmp_path):
    assert set(FORMATS) == {"plain", "chat_template"}
    for key, spec in models.REGISTRY.items():
        assert spec.turn_format in FORMATS, key
        assert for_model(key) is FORMATS[spec.turn_format]
    assert for_model(None) is FORMATS[models.get().turn_format]
    assert for_model(str(tmp_path)) is PLAIN  # a model folder: nothing measured
    assert for_model(str(tmp_path), "chat_template") is TEMPLATE
    assert for_model("qwen2.5-coder-0.5b", "plain") is PLAIN
    with pytest.raises(ValueError, match="--turn-format 'chatml': choose one of plain, chat_template"):
        for_model(None, "chatml")
    assert prompts.get("plain") is PLAIN


def test_turn_format_flag_on_ask_chat_and_serve(capsys):
    parser = build_parser()
    for argv in (["ask", "--store", "s", "q"], ["chat", "--store", "s"], ["serve"]):
        assert parser.parse_args(argv).turn_format is None
        assert parser.parse_args(argv + ["--turn-format", "chat_template"]).turn_format == "chat_template"
        assert parser.parse_args(argv + ["--turn-format", "plain"]).turn_format == "plain"
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv + ["--turn-format", "chatml"])
        assert exit_.value.code == 2 and "invalid choice: 'chatml'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["ingest", "f", "--store", "s", "--turn-format", "plain"])  # only where turns are written
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["ask", "--help"])
    assert "--turn-format NAME" in capsys.readouterr().out


# --- the surfaces ---------------------------------------------------------------------------------------

def test_ask_writes_the_question_in_the_chosen_format(tmp_path, templated_dir, templated_base, tiny_model_dir, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text("The secret code to the vault is 48213. " * 3)
    for store, model, flag, expect in (
            ("plain", templated_dir, [], "The secret code to the vault is 48213. \n\nQuestion: Which code?\nAnswer:"),
            ("tmpl", templated_dir, ["--turn-format", "chat_template"],
             "48213. " + templated_base.render_chat([user("Which code?")]))):
        base = ["--store", str(tmp_path / store), "--model", str(model)]
        assert main(["ingest", str(doc), "--quiet", *base]) == 0
        capsys.readouterr()
        assert main(["ask", "Which code?", "--max-new-tokens", "3", "--json", *base, *flag]) == 0
        answer = json.loads(capsys.readouterr().out)["answer"]
        text = stored_text(templated_base, tmp_path / store)
        assert expect in text and text.endswith(answer)
    base = ["--store", str(tmp_path / "bare"), "--model", str(tiny_model_dir)]  # no template on this tokenizer
    assert main(["ingest", str(doc), "--quiet", *base]) == 0
    capsys.readouterr()
    assert main(["ask", "Which code?", "--turn-format", "chat_template", *base]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no chat template (use --turn-format plain)" in err


def test_chat_turns_follow_the_template(tmp_path, templated_dir, templated_base):
    from megacontext.chat import run_chat

    store = tmp_path / "chat"
    run_chat(str(store), model=str(templated_dir), budget=128, max_new_tokens=4, turn_format="chat_template",
             stdin=io.StringIO(f"{U1}\n{U2}\n"), out=io.StringIO())
    text = stored_text(templated_base, store)
    assert text.startswith(templated_base.render_chat([user(U1)]))
    assert f"<|im_end|>\n<|im_start|>user\n{U2}<|im_end|>\n<|im_start|>assistant\n" in text
    assert text.count("<|im_start|>system") == 1 and "User:" not in text

    plain = tmp_path / "plain"  # a model folder's default: plain
    run_chat(str(plain), model=str(templated_dir), budget=128, max_new_tokens=4, stdin=io.StringIO(f"{U1}\n"),
             out=io.StringIO())
    assert stored_text(templated_base, plain).startswith(f"\n\nUser: {U1}\n\nAssistant:")


def test_the_server_appends_only_new_messages_in_the_template(tmp_path, templated_base, monkeypatch):
    pytest.importorskip("fastapi")
    from test_serve import Server, client

    from megacontext.runtime import MegaContext

    stops = []
    generate = MegaContext.generate

    def spy(self, prompt, **kw):
        stops.append(list(kw["stop"]))
        return generate(self, prompt, **kw)

    monkeypatch.setattr(MegaContext, "generate", spy)
    stores = tmp_path / "stores"
    with Server(stores, templated_base, turn_format="chat_template") as srv:
        c = client(srv, "t")
        messages = [{"role": "system", "content": "You are terse."}]
        for i in range(4):
            messages.append(user(f"Question number {i}?"))
            kw = {"stream": True} if i % 2 else {}
            r = c.chat.completions.create(model=templated_base.info.name, messages=messages, max_tokens=4, **kw)
            reply = ("".join(ch.choices[0].delta.content or "" for ch in r if ch.choices) if kw
                     else r.choices[0].message.content)
            messages.append(assistant(reply))
    text = stored_text(templated_base, stores / "t")
    assert text.startswith(templated_base.render_chat(messages[:2]))
    assert text.count("You are terse.") == 1 and "Be brief." not in text and "User:" not in text
    for i in range(4):
        assert text.count(f"Question number {i}?") == 1
    # every turn closes the one before it (the first closes the system turn)
    assert text.count("<|im_start|>assistant\n") == 4 and text.count("<|im_end|>\n<|im_start|>user\n") == 4
    assert stops == [["<|im_end|>"]] * 4
