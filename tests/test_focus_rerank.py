"""The `hybrid` focus's second stage (issue 20): the frozen model reads the likeliest blocks' best sentences and
how much each explains the question (PMI under UPR's prompt) re-weighs them. The tiny random models are the base;
a bag-of-words stand-in replaces MiniLM."""

import json

import numpy as np
import pytest
import torch

from megacontext.focus import make_policy, rerank
from megacontext.focus.hybrid import FEATURES, load_weights, one_fact, one_fact_of, reread
from megacontext.train.focus import _Tokens, recall_in

from conftest import BagOfWords

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "A violet heron guards the copper lighthouse. "


@pytest.mark.parametrize("which", ["tiny_base", "tiny_qwen_base"])
def test_continuation_logprobs_match_a_plain_forward_of_each_sequence(which, request):
    base = request.getfixturevalue(which)
    prefixes = [base.tokenize("Passage: the sky is blue.\nQuestion:"), base.tokenize("N/A"),
                base.tokenize("Passage: a much longer passage about grass and the sun and the sea.\nQuestion:")]
    question = base.tokenize(" what colour is the sky?")
    got = base.continuation_logprobs(prefixes, question)
    for prefix, value in zip(prefixes, got):  # one sequence at a time, no padding, every row projected
        ids = torch.tensor([prefix + question])
        with torch.no_grad():
            logp = torch.log_softmax(base.model(input_ids=ids).logits[0].float(), dim=-1)
        want = sum(float(logp[len(prefix) - 1 + i, t]) for i, t in enumerate(question))
        assert value == pytest.approx(want, abs=1e-3)
    assert len(set(round(v, 3) for v in got)) == 3  # the prefixes matter
    with pytest.raises(AssertionError):
        base.continuation_logprobs([[]], question)


def test_question_words_drop_the_turns_labels():
    assert rerank.question_words("\n\nQuestion: Who built the bridge?\nAnswer:") == "Who built the bridge?"
    assert rerank.question_words("\n\nUser: what is my dog called?\n\nAssistant:") == "what is my dog called?"
    assert rerank.question_words("Where is it?") == "Where is it?"
    assert rerank.question_words("\n\nAnswer:") == ""


def test_candidates_are_the_likeliest_then_the_best_cosines_not_among_them():
    p = np.array([0.1, 0.9, 0.2, 0.05, 0.0, 0.3])
    dense = np.array([0.9, 0.1, 0.2, 0.8, 0.0, 0.1])
    assert rerank.candidates(p, dense, k=2) == [1, 5, 0, 3]
    assert rerank.candidates(p, p, k=2) == [1, 5]


def test_best_sentences_pick_the_sentence_that_matches_the_question(tiny_base):
    from megacontext.focus.index import DenseIndex

    k = 32  # one token per byte: a block holds the needle's sentence but for its ends
    text = FILLER * 2 + NEEDLE + FILLER * 2
    ids = np.array(tiny_base.tokenize(text))
    store = _Tokens(ids[: len(ids) // k * k], None, k)
    index = DenseIndex(tiny_base, BagOfWords())
    query = index.embed(["where does the violet heron guard the lighthouse"])[0]
    at = len(tiny_base.tokenize(text[:text.index(NEEDLE)])) + 10  # a token inside the needle
    n = store.counts[0]
    got = rerank.best_sentences(index, store, [at // k, 0], query, n)
    assert "violet heron" in got[0] and "heron" not in got[1]
    assert got[1] in FILLER  # block 0's own sentence, whole
    # a live store holds the question after the history: the last block's sentence never runs into it
    asked = np.array(tiny_base.tokenize(text[: n * k] + " where does the violet heron guard the lighthouse?"))
    live = _Tokens(asked[: len(asked) // k * k], None, k)
    last = rerank.best_sentences(index, live, [n - 1], query, n)[0]
    assert "heron" not in last and last in tiny_base.decode(ids[(n - 3) * k:n * k].tolist())


def test_pmi_is_nothing_for_the_content_free_passage(tiny_base):
    gain = rerank.pmi(tiny_base, [rerank.NONE, "The sky is blue.", "The grass is green."], "what colour is the sky?")
    assert gain[0] == pytest.approx(0.0, abs=1e-6) and gain[1] != 0.0 and gain[1] != gain[2]
    long = "tell me everything about the weather and the grass and the sea " * 5 + "what colour is the sky?"
    tail = tiny_base.tokenize(" " + long)[-rerank.QUESTION_TOKENS:]  # a long message: only its end is read
    want = tiny_base.continuation_logprobs([tiny_base.tokenize(rerank.PROMPT.format(s)) for s in ("The sky is blue.",
                                                                                                rerank.NONE)], tail)
    assert rerank.pmi(tiny_base, ["The sky is blue."], long)[0] == pytest.approx(want[0] - want[1], abs=1e-5)


def test_one_fact_in_log_odds_keeps_the_order_of_blocks_too_sure_for_probabilities():
    z = np.array([40.0, 38.0, 0.0, -5.0])  # both first blocks would round to probability 1
    shared = one_fact_of(z)
    assert shared[0] > shared[1] > shared[2] > shared[3] and shared.sum() < 1
    p = np.array([0.99, 0.2, 0.2, 0.01])
    assert np.allclose(one_fact_of(np.log(p / (1 - p))), one_fact(p))


def test_the_second_stage_lifts_the_block_the_model_says_explains_the_question(tiny_base, monkeypatch):
    """The first stage ranks a filler block first; the model's reading of the candidates puts the needle's block
    first (its log-odds plus its log likelihood ratio), and only candidates change."""
    from megacontext.focus.index import DenseIndex

    k = 32
    text = FILLER * 6 + NEEDLE + FILLER * 6
    ids = np.array(tiny_base.tokenize(text))
    n = len(ids) // k
    store = _Tokens(ids[: n * k], None, k)
    index = DenseIndex(tiny_base, BagOfWords())
    needle = (len(tiny_base.tokenize(text[:text.index(NEEDLE)])) + 10) // k
    z = np.full(n, -4.6)  # log-odds: p ≈ 0.01
    z[0], z[needle] = 0.4, -0.85
    dense = np.zeros(n)
    dense[5] = 0.9  # the best cosine: read too, though the first stage ranks it low
    monkeypatch.setattr(rerank, "pmi", lambda base, sentences, q: np.array([8.0 if "heron" in s else 1.0
                                                                         for s in sentences]))
    second = {"candidates": 2}
    out = reread(index, store, tiny_base.tokenize("\n\nQuestion: who guards the lighthouse?\nAnswer:"), z, dense, second)
    assert int(np.argmax(out)) == needle and out[needle] == pytest.approx(z[needle] + 8.0) and out[0] == z[0] + 1.0
    moved = np.flatnonzero(out != z)
    assert set(moved) == set(rerank.candidates(z, dense, 2)) and 5 in moved
    same = reread(index, store, tiny_base.tokenize("\n\nAnswer:"), z, dense, second)  # no words asked: unchanged
    assert same is z


def test_a_card_whose_second_stage_read_with_another_prompt_is_refused(tmp_path):
    weights, bias, card = load_weights()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"features": list(FEATURES), "weights": weights, "bias": bias,
                               "rerank": {"prompt": "Text: {}\nQuestion:", "none": rerank.NONE}}))
    with pytest.raises(ValueError, match="another prompt"):
        load_weights(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"features": list(FEATURES), "weights": weights, "bias": bias,
                                "rerank": {"prompt": rerank.PROMPT, "none": rerank.NONE}}))
    assert load_weights(good)[2]["rerank"]["prompt"] == rerank.PROMPT


def test_recall_in_reads_precomputed_probabilities():
    y = np.array([0, 0, 1, 0], dtype=float)
    assert recall_in([(np.array([0.1, 0.5, 0.4, 0.0]), y)], 1) == 0.0
    assert recall_in([(np.array([0.1, 0.5, 0.4, 0.0]), y)], 2) == 1.0
    assert recall_in([(np.zeros(4), np.zeros(4))], 1) == 0.0  # no fact: left out


def test_the_policy_with_a_second_stage_runs_on_a_store(tmp_path, tiny_base, monkeypatch):
    """End to end on the tiny model: a card with a second stage has the model read its candidates (plus the
    content-free passage) once per question, and the probabilities stay probabilities."""
    from dataclasses import replace

    from megacontext.config import MegaConfig
    from megacontext.runtime import MegaContext

    cfg = MegaConfig().with_budget(160)
    cfg = replace(cfg, store=replace(cfg.store, block_size=8), working=replace(cfg.working, budget=160, protected_tokens=16))
    weights, bias, _ = load_weights()
    card = tmp_path / "card.json"  # the packaged first stage with a second stage, whatever the packaged card holds
    card.write_text(json.dumps({"features": list(FEATURES), "weights": weights, "bias": bias,
                                "rerank": {"prompt": rerank.PROMPT, "none": rerank.NONE}}))
    calls = []
    real = type(tiny_base).continuation_logprobs
    monkeypatch.setattr(type(tiny_base), "continuation_logprobs",
                        lambda self, prefixes, q: calls.append(len(prefixes)) or real(self, prefixes, q))
    with MegaContext.open(tmp_path / "s", tiny_base, cfg, create=True) as mc:
        policy = make_policy("hybrid", base=tiny_base, config=mc.config.focus_config, checkpoint=str(card))
        mc.policy = policy
        mc.append(FILLER * 10 + NEEDLE + FILLER * 10)
        question = tiny_base.tokenize("\n\nQuestion: who guards the lighthouse?\nAnswer:")
        p = policy.block_probs(mc.store, question)
        policy.block_probs(mc.store, question)  # the same question again: served from the cache
        assert len(p) == (mc.store.num_tokens - len(question)) // 8 and ((0 <= p) & (p <= 1)).all()
        assert len(calls) == 1 and 2 <= calls[0] <= 2 * rerank.CANDIDATES + 1
