"""Multi-process training with torchrun: each rank reads its own share of one dataset, and a killed job
resumes exactly where its last committed checkpoint left it.

Run (two processes on this machine, gloo over loopback; torchrun restarts every rank when one dies):

    torchrun --nproc-per-node 2 --max-restarts 3 examples/torchrun_train.py DATASET CHECKPOINT_DIR

``DATASET`` is a packed dataset: a local path or a URL (``http://``, ``s3://``; docs/remote.md). Create
the Loader after ``init_process_group``: it takes its rank and world size from ``torch.distributed`` and
gives each rank a disjoint, equal share of every epoch.

Checkpoints are committed in two phases, so that all ranks restart from the same step:

1. every ``--every`` steps each rank writes ``rank-R-step-S.json`` (its model, here the list of samples
   it consumed, and the loader state) atomically;
2. after a barrier, rank 0 atomically points ``committed.json`` at step ``S``.

A rank killed between the two phases leaves files for a step that was never committed; the restart
ignores them. The loader state is the same on every rank (an epoch and a global sample count), so any
rank's copy resumes the whole job.

``--die-at STEP`` makes rank 1 kill itself with SIGKILL at that step of the first attempt: the test in
``tests/chaos/test_torchrun_kill.py`` uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist

import stoke


def write_atomically(path: Path, document: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as stream:
        json.dump(document, stream)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def init_gloo() -> None:
    """``init_process_group("gloo")`` with keys scoped to this restart of the job.

    torchrun keeps one key-value store across restarts. Gloo's ranks publish their addresses in it under
    fixed keys, so after a restart a fast rank can read the address of a rank that died and fail with
    "Connection refused". A prefix per restart keeps each attempt's addresses apart.
    """
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False)
    scoped = dist.PrefixStore(f"attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group("gloo", store=scoped, rank=rank, world_size=world_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("checkpoints", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--die-at", type=int, default=None)
    args = parser.parse_args()

    init_gloo()
    rank = dist.get_rank()
    args.checkpoints.mkdir(parents=True, exist_ok=True)
    if "://" in args.dataset:  # a remote dataset: each rank keeps its own cache of the shards it reads
        dataset = stoke.open(args.dataset, cache_dir=args.checkpoints / f"cache-{rank}")
    else:
        dataset = stoke.open(args.dataset)
    loader = stoke.Loader(dataset, batch_size=args.batch_size, shuffle=True, seed=0, num_threads=2)

    committed = args.checkpoints / "committed.json"
    step, ledger = 0, {}
    if committed.exists():  # resume: the last step every rank reached and rank 0 committed
        step = json.loads(committed.read_text())["step"]
        state = json.loads((args.checkpoints / f"rank-{rank}-step-{step}.json").read_text())
        ledger = state["ledger"]
        loader.load_state_dict(state["loader"])

    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    while loader.epoch < args.epochs:
        epoch = loader.epoch
        for batch in loader:
            real = ~batch["is_padding"] if "is_padding" in batch else torch.ones(len(batch["index"]), dtype=bool)
            ledger.setdefault(str(epoch), []).extend(batch["index"][real].tolist())
            step += 1  # the training step would run here
            if first_attempt and rank == 1 and step == args.die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if step % args.every == 0:
                state = {"loader": loader.state_dict(), "ledger": ledger}
                write_atomically(args.checkpoints / f"rank-{rank}-step-{step}.json", state)
                dist.barrier()
                if rank == 0:
                    write_atomically(committed, {"step": step})
    state = {"loader": loader.state_dict(), "ledger": ledger}
    write_atomically(args.checkpoints / f"rank-{rank}-final.json", state)
    dist.barrier()
    loader.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
