"""Does a position gap change the logits after it? With and without an explicit attention mask.

Run: `.venv/bin/python scripts/position_gap_probe.py`. transformers 5.x treats any position jump as the
start of a new packed sequence when neither an attention mask nor a cache is passed (e.g. with
`use_cache=False`, as in training), and then blocks attention across it; `BaseModel.forward` always
passes a mask. This probe measures both.
"""

import torch

from megacontext.base import BaseModel
from megacontext.corpora import load_book


def main() -> None:
    base = BaseModel.load()
    ids = torch.tensor(base.tokenize(load_book()[20_000:40_000])[:512])[None]
    emb = base.embed(ids)
    plain = torch.arange(512)[None]
    with torch.no_grad():
        ref = base.forward(emb, plain)[0, 256:]
        ref_nll = torch.nn.functional.cross_entropy(ref[:-1], ids[0, 257:]).item()
        print(f"no gap: NLL of the last 255 tokens {ref_nll:.3f}")
        for gap in (1, 32, 512, 4096):
            pos = plain.clone()
            pos[0, 256:] += gap
            for masked in (True, False):
                if masked:
                    out = base.forward(emb, pos)[0, 256:]
                else:
                    out = base.model(inputs_embeds=emb, position_ids=pos, use_cache=False).logits[0, 256:]
                agree = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
                nll = torch.nn.functional.cross_entropy(out[:-1], ids[0, 257:]).item()
                print(f"gap {gap:>5} after token 256, {'explicit mask' if masked else 'no mask (packed!)'}: "
                      f"argmax agreement {agree:.1%}, NLL {nll:.3f}")


if __name__ == "__main__":
    main()
