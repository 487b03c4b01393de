"""Learner checkpoints: DeepSpeed's (weights, optimizer moments, lr schedule) per trained engine, plus
every rank's RNG states, so that a resumed run continues bit for bit. Every rank must call both."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from proctor.learner.storage import Storage


def save(path: str | Path, engines: list[tuple[str, Any]], rank: int, shuffle: torch.Generator,
         client: dict) -> str:
    """Write ``engines`` ((name, DeepSpeed engine) pairs) and this rank's RNG states under ``path``;
    ``client`` (e.g. step counters) goes with the first engine. Returns the tag; ``prune`` then drops
    the older ones."""
    path = Path(path)
    tag = f"step{client['steps']}"
    for i, (name, eng) in enumerate(engines):
        eng.save_checkpoint(str(path / name), tag=tag, client_state=client if i == 0 else {})
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
           "shuffle": shuffle.get_state()}
    (path / "rng").mkdir(parents=True, exist_ok=True)
    torch.save(rng, path / "rng" / f"{tag}_rank{rank}.pt")
    dist.barrier()
    return tag


def prune(storage: Storage, names: list[str], tag: str) -> None:
    """Keep only checkpoint ``tag`` at ``storage`` (each holds weights + optimizer: GBs); rank 0 calls
    it once every rank's part of ``tag`` is written."""
    for name in names:
        storage.remove_except(name, lambda base: base == tag or not base.startswith("step"))
    storage.remove_except("rng", lambda base: base.startswith(f"{tag}_"))


def load(path: str | Path, engines: list[tuple[str, Any]], rank: int, shuffle: torch.Generator,
         tag: str | None = None) -> dict:
    """Resume from ``save``: same weights, optimizer moments, lr schedule and RNG states; returns the
    client state saved with the first engine."""
    path = Path(path)
    client: dict = {}
    for i, (name, eng) in enumerate(engines):
        load_path, state = eng.load_checkpoint(str(path / name), tag=tag, load_optimizer_states=True,
                                               load_lr_scheduler_states=True)
        if load_path is None:
            raise FileNotFoundError(f"no {name} checkpoint under {path / name}")
        if i == 0:
            client = state
    rng_file = path / "rng" / f"step{client['steps']}_rank{rank}.pt"
    if not rng_file.exists():
        raise FileNotFoundError(f"{rng_file}: RNG state of rank {rank} missing (saved with another world size?)")
    rng = torch.load(rng_file, weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    shuffle.set_state(rng["shuffle"])
    return client
