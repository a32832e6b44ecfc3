"""Worker for the data-parallel test: a seeded linear task trained by the shared loop."""

import os
import sys

import numpy as np
import torch

from megacontext.train.loop import TrainConfig, train


class LinearTask:
    def __init__(self, batch: int) -> None:
        torch.manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(4))
        self.batch = batch

    def parameters(self):
        return [self.w]

    def state_dict(self):
        return {"w": self.w.detach().clone()}

    def load_state_dict(self, state):
        self.w.data.copy_(state["w"])

    def loss(self, step, samples):
        rng = np.random.default_rng(step)
        x = torch.from_numpy(rng.normal(size=(self.batch, 4))).float()[samples.start:samples.stop]
        y = torch.from_numpy(rng.normal(size=self.batch)).float()[samples.start:samples.stop]
        return ((x @ self.w - y) ** 2).mean(), {}


def main(out_dir: str, batch: int, result: str) -> None:
    task = LinearTask(batch)
    train(task, TrainConfig(steps=3, batch_size=batch, lr=0.05, warmup_steps=1, out_dir=out_dir), progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        np.save(result, task.w.detach().numpy())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
