"""The seed models under torch.distributed on the CPU (gloo, 2 ranks): DistributedDataParallel
and FSDP2 (fully_shard) training steps match one process training on the whole batch.

Both wrappers act on parameters from the outside: DDP broadcasts rank 0's into every rank and
hooks their gradients; fully_shard replaces each parameter by a sharded DTensor and, around
each forward and backward, by the gathered tensor. So the fastlayers layers must hold no
state besides their parameters and read them at each forward, which the parameter-swapping
tests below check directly, in one process.
"""

import copy
import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import fastlayers
import fastlayers.nn as fnn
from fastlayers.models import CNN, RNNClassifier, TransformerEncoder

WORLD_SIZE = 2
STEPS = 3
BATCH = 8  # per step, split in halves between the ranks
LR = 0.1
# float32 training: the ranks' gradients are averaged in another order than one process sums them.
FLOAT32_TOL = dict(rtol=1e-5, atol=1e-6)

# Tiny models, so that spawning the ranks (importing torch and fastlayers) dominates.
MODELS = {
    "cnn": (lambda: CNN(channels=(4, 6), hidden=16), (1, 8, 8)),
    "rnn": (lambda: RNNClassifier(hidden_size=12, num_layers=2, bidirectional=True), (8, 8)),
    "transformer": (lambda: TransformerEncoder(d_model=16, nhead=2, num_layers=2, dim_feedforward=24), (8, 8)),
}

# The fastlayers layers that hold parameters: each is its own FSDP2 unit (then the root).
SHARDED_LAYERS = (fnn.Conv2d, fnn.RNN, fnn.MultiheadAttention)

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)


def _setup(name: str, path: str) -> tuple[dict, list]:
    """Saves the initial state_dict and the STEPS batches of (x, y) to `path`; returns them."""
    build, shape = MODELS[name]
    torch.manual_seed(0)
    state = build().state_dict()
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(BATCH, *shape, generator=g), torch.randint(0, 10, (BATCH,), generator=g)) for _ in range(STEPS)
    ]
    torch.save({"state": state, "batches": batches}, path)
    return state, batches


def _train(model: torch.nn.Module, batches, rank: int = 0, world_size: int = 1) -> None:
    """STEPS of SGD on the mean cross-entropy of this rank's share of each batch."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    share = BATCH // world_size
    for x, y in batches:
        part = slice(rank * share, (rank + 1) * share)
        opt.zero_grad()
        F.cross_entropy(model(x[part]), y[part]).backward()
        opt.step()


def _worker(rank: int, mode: str, name: str, tmp: str) -> None:
    """One rank: trains the model wrapped by `mode` on its half of each batch, saves the full
    parameters to tmp/rank{rank}.pt."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from torch.nn.parallel import DistributedDataParallel

    fastlayers.set_strict(True)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{os.path.join(tmp, 'rendezvous')}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        setup = torch.load(os.path.join(tmp, "setup.pt"))
        torch.manual_seed(100 + rank)
        model = MODELS[name][0]()
        if rank == 0:  # the other ranks start elsewhere: DDP must broadcast rank 0's parameters
            model.load_state_dict(setup["state"])
        if mode == "ddp":
            _train(DistributedDataParallel(model), setup["batches"], rank, WORLD_SIZE)
        else:
            model.load_state_dict(setup["state"])  # fully_shard shards what each rank holds
            for m in model.modules():
                if isinstance(m, SHARDED_LAYERS):
                    fully_shard(m)
            fully_shard(model)
            assert all(isinstance(p, DTensor) for p in model.parameters())
            _train(model, setup["batches"], rank, WORLD_SIZE)
        state = {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in model.state_dict().items()}
        torch.save(state, os.path.join(tmp, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Leave without running interpreter teardown: with FSDP2 on gloo, torch 2.14's process
    # sometimes aborts there ("terminate called without an active exception", a thread
    # still joinable at exit) after all the work above has finished and been checked.
    os._exit(0)


def _check_distributed(mode: str, name: str, tmp_path) -> None:
    state, batches = _setup(name, str(tmp_path / "setup.pt"))
    mp.spawn(_worker, args=(mode, name, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    single = MODELS[name][0]()
    single.load_state_dict(state)
    _train(single, batches)
    expected = single.state_dict()
    assert not all(torch.equal(expected[k], v) for k, v in state.items()), "training did not move the parameters"
    for rank in range(WORLD_SIZE):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert list(got) == list(expected)
        for key, value in got.items():
            torch.testing.assert_close(
                value, expected[key], **FLOAT32_TOL, msg=lambda m, r=rank, k=key: f"rank {r} {k}: {m}"
            )


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", MODELS)
def test_ddp_matches_single_process(name, tmp_path):
    _check_distributed("ddp", name, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", MODELS)
def test_fsdp2_matches_single_process(name, tmp_path):
    _check_distributed("fsdp2", name, tmp_path)


@pytest.mark.parametrize("name", MODELS)
def test_layers_read_parameters_at_forward(name):
    """Parameters swapped in from outside (torch.func.functional_call, as FSDP2 and
    torch.compile'd training do) are the ones the fastlayers layers use, as torch's do."""
    build, shape = MODELS[name]
    model = build().double()
    twin = model.torch_reference()
    x = torch.randn(4, *shape, dtype=torch.float64)
    params = {k: torch.randn_like(v) * 0.3 for k, v in model.named_parameters()}
    out = torch.func.functional_call(model, params, (x,))
    torch.testing.assert_close(out, torch.func.functional_call(twin, params, (x,)), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out, model(x))
    # Assigning new Parameter objects: the next forward uses them.
    for key, value in params.items():
        owner, _, attr = key.rpartition(".")
        setattr(model.get_submodule(owner), attr, torch.nn.Parameter(value.clone()))
    torch.testing.assert_close(model(x), out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_layers_hold_no_hidden_state(name):
    """No buffers, nothing carried from one call to the next, and a deep copy is independent."""
    build, shape = MODELS[name]
    model = build()
    assert list(model.buffers()) == []
    x = torch.randn(4, *shape)
    first = model(x)
    model(torch.randn(7, *shape))
    torch.testing.assert_close(model(x), first, rtol=0, atol=0)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    torch.testing.assert_close(clone(x), first, rtol=0, atol=0)
