"""Which text a dense index row should embed (issue 20), on our own paraphrased facts in training books
(`train.focus_data`, family `paraphrased`; never the benchmark's templates or books): per history, the rank of
the asked fact's block by the cosine of the question with rows made of the block alone, the block with half a
block before it (the index until session 14), a block centred in 64 tokens, two blocks, the best sentence
overlapping the block (every sentence end; the index now embeds sentences joined to at least 8 tokens and cut
at block ends, `focus.index`), the half-block rows against the bare question (without the turn's words), and
two sums.

    .venv/bin/python scripts/index_granularity_probe.py [--length 16000] [--seeds 1000,1004,...]
"""

from __future__ import annotations

import argparse
import re

import numpy as np

from megacontext import data
from megacontext.base import BaseModel
from megacontext.focus.index import DenseIndex
from megacontext.train.focus_data import FAMILIES, example


def rank(scores: np.ndarray, hit: np.ndarray) -> int:
    order = np.argsort(-scores, kind="stable")
    return int(np.flatnonzero(hit[order])[0]) + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--length", type=int, default=16000)
    ap.add_argument("--seeds", default=",".join(str(s) for s in range(1000, 1080, 4)))
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    args = ap.parse_args()
    base = BaseModel.load(args.model)
    book = "\n\n".join(data.books("train").values())
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    index = DenseIndex(base)
    ranks: dict[str, list[int]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        if FAMILIES[seed % len(FAMILIES)] != "paraphrased":
            raise SystemExit(f"seed {seed} is not a paraphrased history (seed % {len(FAMILIES)} must be 0)")
        ex = example(seed, args.length, book, count)
        ids, k = base.tokenize(ex.history), 32
        n = len(ids) // k
        q = index.embed([base.decode(base.tokenize(ex.prompt))])[0]
        a, z = ex.span
        hit = np.array([b * k < z and (b + 1) * k > a for b in range(n)])
        text = lambda lo, hi: base.decode(ids[max(0, lo):min(len(ids), hi)])  # noqa: E731
        variants = {"block": [text(b * k, (b + 1) * k) for b in range(n)],
                    "half_before": [text(b * k - k // 2, (b + 1) * k) for b in range(n)],
                    "centred64": [text(b * k - k // 2, (b + 1) * k + k // 2) for b in range(n)],
                    "pair64": [text(b * k - k, (b + 1) * k) for b in range(n)]}
        rows = {name: index.embed(texts) for name, texts in variants.items()}
        cos = {name: r @ q for name, r in rows.items()}
        bare = ex.prompt.split("Question:")[-1].split("\n")[0].strip()  # the question without the turn's words
        cos["hb_bareq"] = rows["half_before"] @ index.embed([bare])[0]
        pieces = [base.decode([t]) for t in ids[:n * k]]
        ends = [i for i, p in enumerate(pieces) if re.search(r"[.!?\n]", p)]
        sentences = [(s, e + 1) for s, e in zip([0] + [e + 1 for e in ends], ends + [n * k - 1]) if e + 1 > s]
        best = np.full(n, -1.0)
        for (s, e), v in zip(sentences, index.embed([base.decode(ids[s:e]) for s, e in sentences]) @ q):
            for b in range(s // k, min(n, (e - 1) // k + 1)):
                best[b] = max(best[b], v)
        cos["sentence_max"] = best
        cos["mix_hb_sent"] = cos["half_before"] + best
        cos["mix_c64_sent"] = cos["centred64"] + best
        row = {name: rank(c, hit) for name, c in cos.items()}
        print(seed, row, flush=True)
        for name, r in row.items():
            ranks.setdefault(name, []).append(r)
    for name, r in ranks.items():
        r = np.array(r)
        print(f"{name:22s} @1 {np.mean(r <= 1):.2f} @3 {np.mean(r <= 3):.2f} @8 {np.mean(r <= 8):.2f} median {np.median(r)}")


if __name__ == "__main__":
    main()
