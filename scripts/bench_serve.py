"""Server load test on the real model: p50/p95 latency under load next to a single request's latency.

Run: `.venv/bin/python scripts/bench_serve.py [--requests 50] [--conversations 5] [--concurrency 10]`.
Starts `megacontext serve` in-process on 127.0.0.1 (budget 1,024), first times single requests one at
a time, then sends the load; every request asks for 16 new tokens. Writes docs/bench_serve.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import uvicorn

from megacontext.base import BaseModel
from megacontext.serve import CONVERSATION_HEADER, create_app
from megacontext.store import Store

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m", help="registry name or model folder (the committed numbers: smollm2-135m)")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stores = Path(tempfile.mkdtemp(prefix="mc-serve-"))
    base = BaseModel.load(args.model)
    app = create_app(stores, base)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"

    def send(cid: str, text: str) -> float:
        t0 = time.perf_counter()
        r = httpx.post(url, timeout=600, headers={CONVERSATION_HEADER: cid},
                       json={"messages": [{"role": "user", "content": text}], "max_tokens": 16})
        r.raise_for_status()
        return time.perf_counter() - t0

    send("warmup", "Hello!")
    single = [send("solo", f"Tell me about the weather, number {i}.") for i in range(5)]
    turns = [(f"conv{i % args.conversations}", f"This is turn {i} of the load test.") for i in range(args.requests)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        loaded = list(pool.map(lambda t: send(*t), turns))
    wall = time.perf_counter() - t0
    server.should_exit = True
    app.state.conversations.close()
    # every turn in its conversation's store exactly once
    stored = {}
    for cid in {c for c, _ in turns}:
        with Store.open(stores / cid) as s:
            stored[cid] = base.decode(s.read_tokens(0, s.num_tokens).tolist())
    once = sum(stored[cid].count(f"User: {text}") == 1 for cid, text in turns)
    q = statistics.quantiles(loaded, n=20)
    result = {"single_request_s_median": statistics.median(single), "single_request_s": single,
              "load": {"requests": args.requests, "conversations": args.conversations,
                       "concurrency": args.concurrency, "p50_s": statistics.median(loaded), "p95_s": q[18],
                       "wall_s": wall, "errors": 0, "turns_stored_once": once}, "max_tokens": 16, "budget": 1024}
    (ROOT / "docs" / "bench_serve.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
