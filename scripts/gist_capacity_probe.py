"""How much can ONE input-embedding vector carry for the frozen base model? (issue 3 upper bound)

For held-out windows, optimise a free vector per replaced block directly against the substitution
loss (ΔNLL + KL, what GistNet is trained on) on the 64 tokens after the region (H1), then score the
NEXT 64 tokens (H2, with H1 raw in between): scoring H1 itself would let the vector smuggle in the
answer. ΔNLL on H2 of delete / trained GistNet / optimised vector, per case: (a) adjacent block,
(c) 12 gists + 4 raw blocks. The optimised vector approximates the best any compressor could do
with one vector per block at these rows and positions (a lower bound on that best: Adam, finite steps).

    python scripts/gist_capacity_probe.py --windows 32 --steps 150 [--free-norm] [--out docs/gist_capacity.json]

`--free-norm` lets the vector take any norm (GistNet always rescales to the typical token norm).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from megacontext import data
from megacontext.base import BaseModel
from megacontext.eval.gist import HORIZON, make_gisters, sample_windows
from megacontext.nets.gistnet import GistNet
from megacontext.train.gist_task import encode_books, raw_teacher, substitution_loss

K = 32
CASES = {"a": (15 * K, 1, (0,)), "c": (0, 16, tuple(range(12)))}  # as in `megacontext eval gist`


def probe(base, ids, case, steps, lr, free_norm, gistnet) -> dict:
    prefix, blocks, replaced = CASES[case]
    fit_ids = ids[:, :-HORIZON]  # [.. region | H1]
    teacher = raw_teacher(base, fit_ids, prefix, HORIZON)
    both = raw_teacher(base, ids, prefix, 2 * HORIZON)  # [.. region | H1 | H2]
    b = ids.shape[0]

    def h2(fn):  # mean ΔNLL over H2 = 2·mean(H1+H2) − mean(H1)
        with torch.no_grad():
            m12 = substitution_loss(base, None, ids, prefix, blocks, replaced, 2 * HORIZON, "compact",
                                    gist_fn=fn, teacher=both, block_size=K)[2]
            m1 = substitution_loss(base, None, fit_ids, prefix, blocks, replaced, HORIZON, "compact",
                                   gist_fn=fn, teacher=teacher, block_size=K)[2]
        return 2 * m12 - m1, m1

    delete, delete_h1 = h2(None)
    net, net_h1 = h2(gistnet)
    with torch.no_grad():
        region = ids[:, prefix:prefix + blocks * K].reshape(b, blocks, K)
        init = gistnet(base.embed(region[:, list(replaced)]).float().reshape(-1, K, base.info.dim))
    vec = torch.nn.Parameter(init.clone())  # start from GistNet's own gists
    opt = torch.optim.Adam([vec], lr=lr)
    norm = base.token_norm

    def fn(_children):
        return vec if free_norm else vec * (norm / vec.norm(dim=-1, keepdim=True).clamp_min(1e-6))

    for _ in range(steps):
        dnll, kl, _ = substitution_loss(base, None, fit_ids, prefix, blocks, replaced, HORIZON, "compact",
                                        gist_fn=fn, teacher=teacher, block_size=K)
        opt.zero_grad()
        (dnll + kl).backward()
        opt.step()
    opt_h2, opt_h1 = h2(fn)
    return {"delete": delete.tolist(), "gistnet": net.tolist(), "optimised": opt_h2.tolist(),
            "delete_h1": delete_h1.tolist(), "gistnet_h1": net_h1.tolist(), "optimised_h1 (fitted)": opt_h1.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--free-norm", action="store_true")
    ap.add_argument("--checkpoint", default="src/megacontext/checkpoints/gistnet-SmolLM2-135M-Instruct.safetensors")
    ap.add_argument("--cases", default="a,c")
    ap.add_argument("--out", default="docs/gist_capacity.json")
    args = ap.parse_args()
    base = BaseModel.load()
    trained, _ = GistNet.load(args.checkpoint)
    gistnet = make_gisters(base, trained).l1["gistnet"]
    books = encode_books(base, data.books("test"))
    windows = sample_windows(books, args.windows, 16 * K + 2 * HORIZON, 0)
    t0 = time.perf_counter()
    result: dict = {"windows": args.windows, "steps": args.steps, "lr": args.lr, "free_norm": args.free_norm,
                    "checkpoint": args.checkpoint, "cases": {}}
    for case in args.cases.split(","):
        per: dict[str, list[float]] = {}
        for lo in range(0, args.windows, args.batch):
            ids = torch.from_numpy(windows[lo:lo + args.batch])
            for key, vals in probe(base, ids, case, args.steps, args.lr, args.free_norm, gistnet).items():
                per.setdefault(key, []).extend(vals)
            print(case, lo + len(ids), {k: round(sum(v) / len(v), 4) for k, v in per.items()}, flush=True)
        means = {k: sum(v) / len(v) for k, v in per.items()}
        means["optimised_over_delete (H2)"] = means["optimised"] / means["delete"]
        means["gistnet_over_delete (H2)"] = means["gistnet"] / means["delete"]
        result["cases"][case] = means
    result["seconds"] = time.perf_counter() - t0
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
