"""LensNet relevance over ALL L1 gists of a trial history at once: the rank and z-score of the needle's block.

    python scripts/lookahead_scan_probe.py LENGTH TRIALS [TASK] [CHUNK]   # e.g. 32000 5 passkey 1024
(GISTNET=path uses another L1 GistNet.) The measurement behind focus.LensNetFocus's lookahead.
"""
import sys, tempfile, time
import numpy as np, torch
from dataclasses import replace
from pathlib import Path
from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.tasks import make_trial
from megacontext.eval.bench import _haystack_book, trial_depth
from megacontext.nets.lensnet import LensNet, packaged_checkpoint
from megacontext.runtime import MegaContext
L = int(sys.argv[1]); N = int(sys.argv[2]); task = sys.argv[3] if len(sys.argv) > 3 else "passkey"
chunk = int(sys.argv[4]) if len(sys.argv) > 4 else 0
base = BaseModel.load(None); book = _haystack_book(); count = lambda t: len(base.tokenize(t))
net, card = LensNet.load(packaged_checkpoint(base.info.name)); net.eval()
ranks = []
for seed in range(N):
    depth = trial_depth(task, L, seed)
    tr = make_trial(task, L, depth, seed, count, book)
    a, b = tr.needle_tokens(count)[0]
    with tempfile.TemporaryDirectory() as tmp, MegaContext.open(Path(tmp)/"s", base, MegaConfig(), create=True) as mc:
        import os
        if os.environ.get("GISTNET"):
            from megacontext.gisters import GistNetGister
            from megacontext.nets.gistnet import GistNet
            gg = GistNetGister(base); gg.net = GistNet.load(os.environ["GISTNET"])[0]; mc.gister = gg
        mc.append(tr.history)
        n = mc.store.num_tokens // 32
        g = mc.store.read_gists(1, 0, n).astype(np.float32)
    q = base.embed(torch.tensor(base.tokenize(tr.prompt)[-64:])).float()[None]
    t = time.perf_counter()
    with torch.no_grad():
        if chunk:
            rel = []
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                d = torch.tensor([(n - i - 1) for i in range(lo, hi)], dtype=torch.float32)
                rel.append(net(torch.from_numpy(g[lo:hi])[None], torch.ones(1, hi - lo, dtype=torch.long), d[None], q)[0, :, 2])
            rel = torch.cat(rel)
        else:
            d = torch.tensor([(n - i - 1) for i in range(n)], dtype=torch.float32)
            rel = net(torch.from_numpy(g)[None], torch.ones(1, n, dtype=torch.long), d[None], q)[0, :, 2]
    dt = time.perf_counter() - t
    needle_blocks = list(range(a // 32, (b - 1) // 32 + 1))
    order = torch.argsort(rel, descending=True).tolist()
    r = min(order.index(i) for i in needle_blocks if i < n)
    ranks.append(r)
    z = ((rel - rel.mean()) / rel.std()).numpy()
    nz = max(z[i] for i in needle_blocks if i < n); other = np.delete(z, [i for i in needle_blocks if i < n])
    print("   z needle %.1f, best other %.1f, 2nd other %.1f, 99th pct %.1f" % (nz, np.sort(other)[-1], np.sort(other)[-2], np.percentile(other, 99)))
    print(seed, f"depth={depth:.2f}", "needle blocks", needle_blocks, "best rank", r, "of", n, "top5", order[:5], f"{dt:.2f}s", flush=True)
print("ranks", ranks)
