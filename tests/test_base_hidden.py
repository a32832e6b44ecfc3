"""`BaseModel.hidden_states`: the residual stream after the first L decoder layers (the contextual GistNet's
reader), on tiny random Llama and Qwen2 models built in the test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(params=["llama", "qwen2"])
def base(request, tiny_base, tiny_qwen_base):
    return tiny_base if request.param == "llama" else tiny_qwen_base


def test_hidden_states_match_the_models_own_layers(base):
    ids = torch.tensor([base.tokenize("The hidden states of the first layers, read causally.")] * 2)
    pos = torch.arange(ids.shape[1])[None].expand(2, -1)
    inner = base.model.model
    torch.testing.assert_close(base.hidden_states(ids, pos, 0), base.embed(ids))
    full = base.hidden_states(ids, pos, base.num_layers)
    # all layers, then the final norm, is the model's own last hidden state
    own = inner(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids)).last_hidden_state
    torch.testing.assert_close(inner.norm(full), own)
    one = inner(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    torch.testing.assert_close(base.hidden_states(ids, pos, 1), one.hidden_states[1])
    assert not full.requires_grad


def test_hidden_states_are_causal_and_shift_invariant(base):
    ids = torch.tensor([base.tokenize("Causal: later tokens never change earlier states.")])
    n = ids.shape[1]
    pos = torch.arange(n)[None]
    h = base.hidden_states(ids, pos, 2)
    torch.testing.assert_close(base.hidden_states(ids[:, :10], pos[:, :10], 2), h[:, :10])
    # rotary positions are relative: a uniform shift leaves the states unchanged
    torch.testing.assert_close(base.hidden_states(ids, pos + 100, 2), h, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="--context-layers 3"):
        base.hidden_states(ids, pos, 3)
