"""`megacontext chat`: a terminal conversation whose memory is the store.

Quit and come back later: the store is reopened, not replayed. Replies stream token by token;
`/focus` shows the focus map, `/stats` the store and the last reply's timings; Ctrl-C stops a reply
(what was said so far stays in the store) and Ctrl-D or `/quit` leaves.
"""

from __future__ import annotations

import sys
from dataclasses import replace

HELP = "commands: /focus (focus map), /stats (store and timings), /quit (or Ctrl-D); Ctrl-C stops a reply"


def run_chat(store: str, model: str | None = None, budget: int = 1024, max_new_tokens: int = 256,
             stdin=None, out=None, gister: str | None = None, turn_format: str | None = None) -> None:
    """`turn_format`: a `prompts.FORMATS` name; None takes the model's measured one."""
    from megacontext.config import MegaConfig
    from megacontext.prompts import for_model
    from megacontext.runtime import MegaContext

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    config = replace(MegaConfig().with_budget(budget), gister=gister)
    config.validate()
    fmt = for_model(model, turn_format)
    say = lambda *a, end="\n": (print(*a, end=end, file=out, flush=True))  # noqa: E731
    with MegaContext.open(store, config=config, create=True, model=model) as mc:
        fmt.check(mc.base)
        # A session's first turn is written as a fresh conversation: the store may hold documents, not turns.
        replied = False
        say(f"MegaContext chat — {mc.store.num_tokens:,} tokens in memory at {store}; budget {budget} rows. {HELP}")
        last: dict = {}
        while True:
            say("you> ", end="")
            line = stdin.readline()
            if not line:  # Ctrl-D / end of input
                say("")
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            if text == "/focus":
                focus = mc.inspect()["focus"]
                say(f"  {focus['strip']}  ({focus['rows']} rows; 0 = raw, n = level-n gist)" if focus
                    else "  no working context yet")
                continue
            if text == "/stats":
                info = mc.inspect()
                say(f"  {info['tokens']:,} tokens, {len(info['levels']) - 1} gist levels, {info['disk_bytes']:,} bytes "
                    f"on disk; last reply: " + (", ".join(f"{k} {v:.2f}s" for k, v in last.items()) or "none"))
                continue
            if text.startswith("/"):
                say(f"  unknown command {text}; {HELP}")
                continue
            say("bot> ", end="")
            try:
                prompt = fmt.turn(mc.base, [{"role": "user", "content": text}], after_reply=replied)
                answer = mc.generate(prompt.text, max_new_tokens=max_new_tokens, budget=budget, stop=prompt.stop,
                                     on_token=lambda piece: say(piece, end=""))
                last, replied = answer.timings, True
                say("")
            except KeyboardInterrupt:
                say(" [stopped; this turn was not kept, the conversation before it is]")
        say(f"bye — {mc.store.num_tokens:,} tokens remembered in {store}")
