"""Turn formats: how a chat turn and a one-shot question are written into the history, and the stop
strings that end the answer (issue 17 item 3, issue 21 item 5).

Two formats, chosen per model by measurement (`docs/models.md`, "Turn format"; each registry entry's
`turn_format`):

- `plain`: `"\\n\\nUser: …"` per message, then `"\\n\\nAssistant:"`, stop `"\\nUser:"`; a question is
  `"\\n\\nQuestion: …\\nAnswer:"`, stop `"\\n"`.
- `chat_template`: the model's own chat template (rendered by `BaseModel.render_chat`, the tokenizer
  being in `base`), stop at its end-of-turn text (e.g. `<|im_end|>`, which is also EOS for SmolLM2 and
  Qwen2.5).

The store holds the history as text that grows by turns, and a turn only appends: `turn` renders the
new messages so that the earlier turns plus this one equal the template over all messages. A
template's turn is found by difference against a stand-in conversation (`_PREV_Q`, `_PREV_A`): the
text it adds after a previous answer. Stdlib only; the model is handed in (anything with
`render_chat`), so this module never loads torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from megacontext import models

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}  # plain: role → its name in the text
_PREV_Q, _PREV_A = "MEGACONTEXT-EARLIER-QUESTION", "MEGACONTEXT-EARLIER-ANSWER"  # stand-ins for earlier turns


@dataclass(frozen=True)
class Prompt:
    """What to append to the history, and the stop strings that end the answer to it."""

    text: str
    stop: tuple[str, ...]


class ChatRenderer(Protocol):
    """What a format needs from the model (`base.BaseModel` is one)."""

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str | None: ...


class TurnFormat:
    """A way of writing turns. `messages` are `{"role": "system"|"user"|"assistant", "content": str}`."""

    name = ""
    about = ""

    def turn(self, model: ChatRenderer, messages: list[dict], after_reply: bool) -> Prompt:
        """The text for the new `messages` of a chat turn, ending where the assistant's answer starts.

        `after_reply`: the history already ends with an answer written in this format (earlier turns
        of this conversation); otherwise it is empty or plain text (ingested documents)."""
        raise NotImplementedError

    def question(self, model: ChatRenderer, question: str) -> Prompt:
        """A one-shot question after whatever the history holds (`megacontext ask`)."""
        raise NotImplementedError

    def check(self, model: ChatRenderer) -> None:
        """ValueError now if this format cannot be used with `model` (rather than at the first turn)."""


class Plain(TurnFormat):
    name = "plain"
    about = "User:/Assistant: and Question:/Answer: lines; works with any model"

    def turn(self, model: ChatRenderer, messages: list[dict], after_reply: bool) -> Prompt:
        text = "".join(f"\n\n{ROLES[m['role']]}: {m['content']}" for m in messages)
        return Prompt(text + "\n\nAssistant:", ("\nUser:",))

    def question(self, model: ChatRenderer, question: str) -> Prompt:
        return Prompt(f"\n\nQuestion: {question}\nAnswer:", ("\n",))


class ChatTemplate(TurnFormat):
    name = "chat_template"
    about = "the model's own chat template (its tokenizer's), stopped at its end-of-turn text"

    def turn(self, model: ChatRenderer, messages: list[dict], after_reply: bool) -> Prompt:
        stop = self._stop(model)
        if not after_reply:
            return Prompt(self._render(model, messages), stop)
        head = self._render(model, [{"role": "user", "content": _PREV_Q}]) + _PREV_A  # what the history ends with
        full = self._render(model, [{"role": "user", "content": _PREV_Q},
                                    {"role": "assistant", "content": _PREV_A}, *messages])
        rest = _after(full, head)
        return Prompt(self._render(model, messages) if rest is None else rest, stop)

    def question(self, model: ChatRenderer, question: str) -> Prompt:
        return self.turn(model, [{"role": "user", "content": question}], after_reply=False)

    def check(self, model: ChatRenderer) -> None:
        self._stop(model)

    def _stop(self, model: ChatRenderer) -> tuple[str, ...]:
        """The end-of-turn text that closes an answer (e.g. "<|im_end|>"), as the template writes it."""
        head = self._render(model, [{"role": "user", "content": _PREV_Q}]) + _PREV_A
        closed = self._render(model, [{"role": "user", "content": _PREV_Q},
                                      {"role": "assistant", "content": _PREV_A}], add_generation_prompt=False)
        end = (_after(closed, head) or "").strip()
        return (end,) if end else ()

    @staticmethod
    def _render(model: ChatRenderer, messages: list[dict], add_generation_prompt: bool = True) -> str:
        text = model.render_chat(messages, add_generation_prompt=add_generation_prompt)
        if text is None:
            raise ValueError("--turn-format chat_template: this model's tokenizer has no chat template "
                             "(use --turn-format plain)")
        return text


def _after(full: str, head: str) -> str | None:
    """What `full` adds after `head` (the stand-in history ending with `_PREV_A`). A template that rewrites
    earlier turns (none of ours does) gives what follows the stand-in answer, or None if it dropped it."""
    if full.startswith(head):
        return full[len(head):]
    return full[full.rindex(_PREV_A) + len(_PREV_A):] if _PREV_A in full else None


FORMATS: dict[str, TurnFormat] = {f.name: f for f in (Plain(), ChatTemplate())}


def get(name: str) -> TurnFormat:
    """The format called `name`; ValueError naming `--turn-format` otherwise."""
    if name not in FORMATS:
        raise ValueError(f"--turn-format {name!r}: choose one of {', '.join(FORMATS)}")
    return FORMATS[name]


def for_model(model: str | None, turn_format: str | None = None) -> TurnFormat:
    """The format for `--model` (a registry name, None for the default, or a folder path): `turn_format`
    if given, else the registry entry's measured choice; `plain` for a folder (nothing measured)."""
    if turn_format is not None:
        return get(turn_format)
    if model is None or str(model) in models.REGISTRY:
        return get(models.get(None if model is None else str(model)).turn_format)
    return FORMATS["plain"]
