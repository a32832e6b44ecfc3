"""`bench --device`: every method keeps its tensors where the base model is; on the CPU nothing changes.

This machine has no GPU, so an accelerator is simulated: `Far` tensors hold CPU data but report the `meta`
device, and mixing one with a CPU tensor (other than a 0-d one) raises, as CUDA does; `.numpy()` on one raises
too. A tiny random model whose inputs and outputs are `Far` then catches any tensor a method makes on the CPU and
feeds to the model's outputs (targets, ids gathered from logits, …) — the bug a CUDA run would hit."""

import json

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from megacontext.eval import methods
from megacontext.tasks import make_trial
from test_methods import BOOK, Embedder

FAR = torch.device("meta")
aten = torch.ops.aten


class Far(torch.Tensor):
    """CPU data on a pretend accelerator (`FAR`): ops run on the data; a CPU operand with dims raises."""

    @staticmethod
    def __new__(cls, elem):
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(),
                                                   storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                                   device=FAR, requires_grad=elem.requires_grad)

    def __init__(self, elem):
        self.elem = elem

    def __repr__(self):
        return f"Far({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._to_copy.default and torch.device(kwargs.get("device") or FAR).type == "cpu":
            return func(args[0].elem, **{k: v for k, v in kwargs.items() if k != "device"})  # .cpu(): back home

        def check(t):
            if isinstance(t, torch.Tensor) and not isinstance(t, Far) and t.dim() > 0:
                raise RuntimeError(f"{func}: a CPU tensor {tuple(t.shape)} meets one on the accelerator")

        tree_map(check, (args, kwargs))
        out = func(*tree_map(near, args), **tree_map(near, kwargs))
        if func is aten._local_scalar_dense.default:  # .item(), int(): a Python number, as on CUDA
            return out
        return tree_map(lambda t: far(t) if isinstance(t, torch.Tensor) else t, out)


def far(t):
    return t if isinstance(t, Far) else Far(t)


def near(t):
    return t.elem if isinstance(t, Far) else t


class Accelerator(TorchFunctionMode):
    """Tensors made with `device=FAR` or moved `.to(FAR)` become `Far`; `.tolist()` reads a `Far`'s data."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if kwargs.get("device") is not None and torch.device(kwargs["device"]) == FAR:
            return far(func(*args, **{**kwargs, "device": "cpu"}))
        if func is torch.Tensor.tolist and isinstance(args[0], Far):
            return args[0].elem.tolist()
        if func is torch.Tensor.to:
            where = [a for a in args[1:] if isinstance(a, (str, torch.device))]
            if where and torch.device(where[0]) == FAR:
                rest = [a for a in args[1:] if not isinstance(a, (str, torch.device))]
                return far(func(near(args[0]), *rest, **kwargs))
        return func(*args, **kwargs)


class FarBase:
    """The tiny base model as if its weights lay on the accelerator: what it returns is `Far`."""

    device = FAR

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def embedding_matrix(self):
        return far(self.inner.embedding_matrix)

    def embed(self, ids):
        return far(self.inner.embed(near(ids)))

    def forward(self, inputs_embeds, position_ids, cache=None, logits_to_keep=0):
        return far(self.inner.forward(near(inputs_embeds), near(position_ids), cache, logits_to_keep))


def test_the_simulated_accelerator_refuses_what_cuda_refuses():
    with Accelerator():
        x = torch.ones(3, device=FAR)
        y = torch.tensor([1.0, 2.0, 3.0]).to(FAR)
        assert (x * y).device == FAR and int((x * y).argmax()) == 2 and (x + y).tolist() == [2.0, 3.0, 4.0]
        assert (x + torch.tensor(1.0)).tolist() == [2.0, 2.0, 2.0]  # a 0-d CPU tensor is a scalar: allowed
        assert (x * y).cpu().numpy().tolist() == [1.0, 2.0, 3.0]
        with pytest.raises(RuntimeError, match="CPU tensor"):
            x + torch.ones(3)
        with pytest.raises(RuntimeError, match="numpy"):
            x.numpy()


@pytest.mark.parametrize("task", ["passkey_q", "doc_nll"])
def test_every_method_keeps_its_tensors_on_the_base_models_device(tiny_base, monkeypatch, task):
    """Every method answers (and scores) on the simulated accelerator exactly as on the CPU: no tensor it makes is
    left on the CPU to meet the model's outputs (token dropping's ids and targets, the NLL targets of `full` and of
    MegaContext's `score`), and what it reads back it moves home first."""
    monkeypatch.setattr(methods.RagMiniLM, "embedder", lambda self: Embedder())
    count = lambda text: len(tiny_base.tokenize(text))  # noqa: E731
    trial = make_trial(task, 700, 0.5, 0, count, BOOK)
    base = FarBase(tiny_base)
    for name in (m for m in methods.METHODS if m != "mc_lensnet"):  # the tiny model has no LensNet
        here = methods.make_method(name, tiny_base).run(trial, 256, 4)
        with Accelerator():
            there = methods.make_method(name, base).run(trial, 256, 4)
        assert (there.text, there.nll, there.rows, there.raw_spans) == (here.text, here.nll, here.rows,
                                                                       here.raw_spans), name
        assert there.text or there.nll is not None, name


def test_rows_are_the_same_with_and_without_device_cpu(tiny_model_dir, tmp_path, monkeypatch):
    from megacontext.eval.bench import run

    monkeypatch.setattr(methods.RagMiniLM, "embedder", lambda self: Embedder())
    timing = {"wall_s", "answer_s", "ingest_s", "run"}

    def rows(out, **kw):
        path = run("smoke", tasks=("passkey", "doc_nll"), methods=("truncation", "rag_minilm", "token_drop",
                   "megacontext"), out_dir=str(tmp_path / out), model=str(tiny_model_dir), book=BOOK, progress=False,
                   **kw)
        lines = path.read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]

    default, cpu = rows("default"), rows("cpu", device="cpu")
    assert len(default) == 8 and default == cpu
    assert {r["device"] for r in cpu} == {"cpu"}


def test_cuda_without_a_gpu_is_one_line_before_the_model_loads(monkeypatch, capsys):
    from megacontext import cli
    from megacontext.base import BaseModel

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(BaseModel, "load", lambda *a, **k: pytest.fail("the model loaded"))
    assert cli.main(["bench", "--device", "cuda", "--tasks", "passkey"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("megacontext bench: error: --device cuda: no CUDA device here")
    assert cli.main(["bench", "--device", "tpu"]) == 1
    assert "choose cpu or cuda" in capsys.readouterr().err


def test_a_cuda_index_this_machine_lacks_is_one_line(monkeypatch):
    from megacontext.eval.bench import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda:0") == "cuda:0" and check_device("cuda") == "cuda"
    with pytest.raises(ValueError, match=r"--device cuda:5: this machine has 1 CUDA device\(s\)"):
        check_device("cuda:5")
