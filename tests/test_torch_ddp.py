"""Data-parallel training of fusedrnn.torch modules with DistributedDataParallel.

Two processes (gloo backend, 127.0.0.1, one thread each) train the same model, each on
half of every global batch; DDP averages their gradients.  Because the loss is a mean
over equally sized shards, the averaged gradient is the full batch's gradient, so both
processes must end with exactly the parameters (float64, up to rounding) that a single
process reaches by training on the whole global batches."""
from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest

from helpers import assert_close, require

WORLD_SIZE = 2
GLOBAL_BATCH = 8
STEPS = 4
TIME_STEPS = 7
INPUT_SIZE = 3
LIMIT_SECONDS = 120  # a hung rendezvous fails the test instead of blocking the suite


def global_batches():
    """The same global batches for every process: (inputs, lengths, targets) per step."""
    rng = np.random.default_rng(1234)
    batches = []
    for _ in range(STEPS):
        inputs = rng.standard_normal((GLOBAL_BATCH, TIME_STEPS, INPUT_SIZE))
        lengths = rng.integers(1, TIME_STEPS + 1, size=GLOBAL_BATCH)
        targets = rng.standard_normal((GLOBAL_BATCH, 2))
        batches.append((inputs, lengths, targets))
    return batches


def build_model(torch):
    """LSTM -> GRU -> RNN over packed sequences, then a linear head on the final states.
    Deterministic initialisation: every process starts from the same parameters."""
    import fusedrnn.torch as ft

    class SequenceRegressor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = ft.LSTM(INPUT_SIZE, 6, num_layers=2, bidirectional=True,
                                batch_first=True)
            self.gru = ft.GRU(12, 5, batch_first=True)
            self.rnn = ft.RNN(5, 4, nonlinearity="relu", batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, packed):
            hidden, _ = self.lstm(packed)
            hidden, _ = self.gru(hidden)
            _, h_n = self.rnn(hidden)
            return self.head(torch.cat([h_n[0], h_n[1]], dim=1))

    torch.manual_seed(7)
    return SequenceRegressor().double()


def train(torch, model, batches, shard):
    """Adam on the mean squared error; `shard` picks this process's rows of each batch."""
    from torch.nn.utils.rnn import pack_padded_sequence

    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for inputs, lengths, targets in batches:
        inputs = torch.tensor(inputs[shard])
        packed = pack_padded_sequence(inputs, torch.tensor(lengths[shard]), batch_first=True,
                                      enforce_sorted=False)
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(packed), torch.tensor(targets[shard]))
        loss.backward()
        optimizer.step()


def limit_threads(torch):
    import threadpoolctl

    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)


def ddp_worker(rank, port, out_dir):
    """One process of the data-parallel run; saves its final parameters."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    limit_threads(torch)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD_SIZE, timeout=timedelta(seconds=60))
    try:
        model = DistributedDataParallel(build_model(torch))
        per_rank = GLOBAL_BATCH // WORLD_SIZE
        train(torch, model, global_batches(), slice(rank * per_rank, (rank + 1) * per_rank))
        torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_local_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_on_two_processes_matches_one_process(request, tmp_path, monkeypatch):
    torch = require("torch", request)
    import torch.multiprocessing as mp

    # Inherited by the spawned processes: loopback only, one thread each.
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")

    context = mp.start_processes(ddp_worker, args=(free_local_port(), str(tmp_path)),
                                 nprocs=WORLD_SIZE, join=False, start_method="spawn")
    deadline = time.monotonic() + LIMIT_SECONDS
    while not context.join(timeout=1):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the DDP workers did not finish within {LIMIT_SECONDS} s")

    # The same training in this process, on the whole global batches.
    import threadpoolctl

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpoolctl.threadpool_limits(1):
            single = build_model(torch)
            start = {name: p.detach().clone() for name, p in single.named_parameters()}
            train(torch, single, global_batches(), slice(None))
    finally:
        torch.set_num_threads(threads_before)
    expected = single.state_dict()

    moved = max(float((expected[name] - value).abs().max()) for name, value in start.items())
    assert moved > 0.05  # the training changed the parameters noticeably
    for rank in range(WORLD_SIZE):
        state = torch.load(tmp_path / f"rank{rank}.pt")
        assert list(state) == list(expected)
        for name, value in expected.items():
            assert_close(state[name].numpy(), value.numpy(), 1e-10, name=f"rank {rank}: {name}")
