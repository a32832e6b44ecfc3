import pytest
import torch

from megacontext.sampling import Sampler, SamplingConfig, StopRule, decode


def test_greedy_is_argmax_and_sampling_is_seeded_and_respects_top_p():
    logits = torch.tensor([0.0, 3.0, 2.9, -5.0])
    assert Sampler()(logits) == 1
    draws = lambda seed: [s(logits) for s in [Sampler(SamplingConfig(1.0, 1.0, seed))] for _ in range(50)]  # noqa: E731
    assert draws(7) == draws(7) and draws(7) != draws(8)
    assert set(draws(7)) >= {1, 2}
    # top_p 0.5: the smallest prefix of the sorted distribution reaching 0.5 is token 1 alone
    assert {Sampler(SamplingConfig(1.0, 0.5, seed))(logits) for seed in range(30)} == {1}
    with pytest.raises(ValueError, match="top_p"):
        Sampler(SamplingConfig(1.0, 0.0))
    with pytest.raises(ValueError, match="temperature"):
        Sampler(SamplingConfig(-1.0))


def test_stop_rule_ignores_leading_whitespace_and_cuts_at_the_earliest_stop():
    rule = StopRule.of(["\n", "User:"])
    assert not rule.hit("\n\n  48213")
    assert rule.hit("\n48213\nmore")
    assert rule.cut("\n 48213 User: hi\nmore") == "48213 "
    assert rule.cut("  no stop here ") == "no stop here "
    assert StopRule.of(None).stops == () and StopRule.of("x").stops == ("x",)


def _script(tokens):
    """Logits that make greedy decoding emit `tokens` in order, and a step that follows them."""
    def logits_for(i):
        out = torch.full((1, 1, 10), -1.0)
        out[0, 0, tokens[i] if i < len(tokens) else 0] = 1.0
        return out

    calls = []

    def step(token, last):
        calls.append((token, last))
        return None if last else logits_for(len(calls))

    return logits_for(0), step, calls


def test_decode_ends_at_eos_stop_or_length():
    text = lambda ids: "".join("ab\n"[i - 1] if 1 <= i <= 3 else "" for i in ids)  # noqa: E731
    logits, step, calls = _script([1, 2, 9])
    assert decode(logits, step, 10, eos_token_id=9, detokenize=text) == ([1, 2], "eos")
    logits, step, calls = _script([1, 3, 2])
    assert decode(logits, step, 10, 9, text, StopRule.of("\n")) == ([1, 3], "stop")
    logits, step, calls = _script([1, 2, 1, 2])
    seen = []
    assert decode(logits, step, 3, 9, text, on_text=seen.append) == ([1, 2, 1], "length")
    assert calls[-1] == (1, True) and [last for _, last in calls] == [False, False, True]
    assert seen == ["a", "ab", "aba"]


def test_text_stream_pieces_add_up_to_the_final_answer():
    from megacontext.sampling import TextStream

    sent = []
    stream = TextStream(StopRule.of("\nUser:"), sent.append)
    # a character split across tokens decodes as U+FFFD until complete; a stop's start and spaces wait
    for text in [" ", " Pa", " Par\ufffd", " Paré", " Paré ", " Paré \n", " Paré \nUs", " Paré \nUser:"]:
        stream.feed(text)
    stream.finish(StopRule.of("\nUser:").cut(" Paré \nUser:").strip())
    assert "".join(sent) == "Paré" and "\ufffd" not in "".join(sent)
