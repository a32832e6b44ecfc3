"""Decoding (DESIGN §2 `sampling`): the next-token choice and the stop rules, for every generator.

`decode` runs the loop over any model step (the runtime's refocusing working context, a baseline's
plain KV cache); `Sampler` picks tokens (greedy at temperature 0, else temperature + top-p, seeded);
`StopRule` ends an answer at EOS or at a stop string once some content has come.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None

    def validate(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be ≥ 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


class Sampler:
    def __init__(self, config: SamplingConfig = SamplingConfig()) -> None:
        config.validate()
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None

    def __call__(self, logits: torch.Tensor) -> int:
        """logits `[vocab]` → a token id."""
        if self.config.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float().cpu() / self.config.temperature, dim=-1)
        if self.config.top_p < 1:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(0) - sorted_p < self.config.top_p  # the smallest prefix reaching top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=self.generator))


@dataclass(frozen=True)
class StopRule:
    """Stop strings count only after the answer's leading whitespace (a completion often opens with
    a newline); the text returned is cut before the first one. A stop string that starts with a
    newline means "at a line start", so it also matches at the start of the answer ("\nUser:" stops
    an answer that opens with "User:")."""

    stops: Sequence[str] = ()

    @classmethod
    def of(cls, stop: str | Sequence[str] | None) -> "StopRule":
        return cls(() if stop is None else (stop,) if isinstance(stop, str) else tuple(stop))

    def _first(self, body: str) -> int | None:
        cuts = [body.index(s) for s in self.stops if s and s in body]
        cuts += [0 for s in self.stops if s.startswith("\n") and s.strip() and body.startswith(s.lstrip("\n"))]
        return min(cuts) if cuts else None

    def hit(self, text: str) -> bool:
        return self._first(text.lstrip()) is not None

    def cut(self, text: str) -> str:
        """`text` without its leading whitespace, cut before the earliest stop string."""
        body = text.lstrip()
        first = self._first(body)
        return body if first is None else body[:first]


class TextStream:
    """Streams an answer's text so that the pieces add up to the final answer exactly: leading and
    trailing whitespace, a possible start of a stop string and an unfinished character (U+FFFD from a
    partial UTF-8 sequence) are held back until the text after them shows what they are."""

    def __init__(self, rule: StopRule, sink: Callable[[str], None] | None) -> None:
        self.rule, self.sink = rule, sink
        self.text, self.sent = "", ""

    def feed(self, text: str) -> None:
        """`text`: the whole answer decoded so far (decoding tokens one by one would split characters)."""
        self.text = text
        safe = self.rule.cut(self.text).rstrip().rstrip("\ufffd")
        for s in self.rule.stops:  # hold back a tail that could be the start of a stop string
            for n in range(min(len(s) - 1, len(safe)), 0, -1):
                if safe.endswith(s[:n]):
                    safe = safe[:-n]
                    break
        self._send(safe.rstrip())

    def finish(self, final: str) -> None:
        self._send(final)

    def _send(self, text: str) -> None:
        if self.sink is not None and text.startswith(self.sent) and len(text) > len(self.sent):
            self.sink(text[len(self.sent):])
            self.sent = text


def decode(logits: torch.Tensor, step: Callable[[int, bool], torch.Tensor | None], max_new_tokens: int,
           eos_token_id: int | None, detokenize: Callable[[list[int]], str], stop: StopRule = StopRule(),
           sampler: Sampler | None = None, on_text: Callable[[str], None] | None = None) -> tuple[list[int], str]:
    """Generate up to `max_new_tokens` from `logits [1, n, vocab]` (the last row predicts the first token).

    `step(token, last)` takes each new token into the model and returns the logits of the next one
    (with `last`, the token is never followed and the step may skip the model). Returns the tokens and
    why decoding ended: "eos", "stop" or "length". `on_text` sees the whole text decoded so far after each
    token."""
    sampler = sampler or Sampler()
    out: list[int] = []
    for i in range(max_new_tokens):
        token = sampler(logits[0, -1])
        if token == eos_token_id:
            return out, "eos"
        out.append(token)
        text = detokenize(out)
        if on_text:
            on_text(text)
        if stop.stops and stop.hit(text):
            return out, "stop"
        logits = step(token, i + 1 == max_new_tokens)
    return out, "length"
