"""``proctor prm train``: fit the PRM on line labels with DeepSpeed, report held-out line metrics.

Rows come from ``proctor prm label`` (a JSONL file ``datasets`` loads): prompt and response ids,
and for each code line its last token and its +-1 label. Problems are split train / held-out (a
problem's responses never straddle the split). One DeepSpeed engine (ZeRO 0-3; gloo on CPU, world
size 1 here) trains the backbone and the head on the labelled positions only. Reported on the
held-out rows: line accuracy (sign of the score), ROC AUC, and first-bad-line localisation (of the
failed responses, the share whose first negative-scored code line is the labelled first bad line).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path

import torch

from proctor.learner.deepspeed_setup import init_deepspeed
from proctor.learner.lora import add_value_adapters, trainable_count
from proctor.learner.model import resolve_dtype
from proctor.reward.config import PRMTrainConfig
from proctor.reward.prm import PRM, auc, pad, score_positions

FIELDS = ("problem_id", "prompt_ids", "response_ids", "line_last_tokens", "line_kinds", "labels", "passed",
          "first_bad_line")


class LabelError(ValueError):
    pass


def load_labels(path: str | Path) -> list[dict]:
    """The label rows, each checked: a bad row names the file, the row and the field."""
    from datasets import load_dataset

    path = Path(path)
    if not path.is_file():
        raise LabelError(f"label file {path} does not exist (write it with `proctor prm label`)")
    rows = load_dataset("json", data_files=str(path), split="train").to_list()
    for i, r in enumerate(rows):
        where = f"{path}: row {i} (problem {r.get('problem_id')!r})"
        missing = [f for f in FIELDS if f not in r]
        if missing:
            raise LabelError(f"{where}: missing field(s) {missing}")
        n = len(r["response_ids"])
        if not (len(r["line_last_tokens"]) == len(r["line_kinds"]) == len(r["labels"])):
            raise LabelError(f"{where}: field labels: line_last_tokens, line_kinds and labels differ in length")
        for t, k in zip(r["line_last_tokens"], r["line_kinds"]):
            if k == "code" and not 0 <= t < n:
                raise LabelError(f"{where}: field line_last_tokens: {t} outside the {n} response tokens")
    return rows


def positions(row: dict) -> tuple[list[int], list[float]]:
    """Absolute positions (in prompt + response) and labels of the row's code lines."""
    base = len(row["prompt_ids"])
    pairs = [(base + t, y) for t, k, y in zip(row["line_last_tokens"], row["line_kinds"], row["labels"]) if k == "code"]
    return [p for p, _ in pairs], [y for _, y in pairs]


def split(rows: list[dict], heldout_frac: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    ids = sorted({r["problem_id"] for r in rows})
    random.Random(seed).shuffle(ids)
    held = set(ids[: round(len(ids) * heldout_frac)])
    return [r for r in rows if r["problem_id"] not in held], [r for r in rows if r["problem_id"] in held]


def evaluate(model: PRM, rows: list[dict], pad_id: int) -> dict:
    rows = [r for r in rows if positions(r)[0]]
    if not rows:
        return {"lines": 0}
    pos = [positions(r) for r in rows]
    scores = score_positions(model, [r["prompt_ids"] + r["response_ids"] for r in rows], [p for p, _ in pos], pad_id)
    flat_s = [s for ss in scores for s in ss]
    flat_y = [y for _, ys in pos for y in ys]
    located, at_first, failed = 0, 0, 0
    for r, ss in zip(rows, scores):
        if r["passed"] or r["first_bad_line"] is None:
            continue
        failed += 1
        code_idx = [i for i, k in enumerate(r["line_kinds"]) if k == "code"]
        predicted = next((i for i, s in zip(code_idx, ss) if s < 0), None)
        located += predicted == r["first_bad_line"]
        at_first += code_idx[0] == r["first_bad_line"]
    area = auc(flat_s, flat_y)
    positive = sum(y > 0 for y in flat_y) / len(flat_y)
    # Baselines beside each figure: always the majority label; "the first code line is the bad one".
    return {"lines": len(flat_y), "positive_frac": positive, "majority_accuracy": max(positive, 1 - positive),
            "first_bad_is_first_line": at_first / failed if failed else None,
            "line_accuracy": sum((s >= 0) == (y > 0) for s, y in zip(flat_s, flat_y)) / len(flat_y),
            "auc": None if math.isnan(area) else area,          # None: one class only (JSON has no NaN)
            "first_bad_located": located / failed if failed else None, "failed_responses": failed}


@contextlib.contextmanager
def _no_progress(description: str, total: int):
    yield lambda: None


def train_prm(cfg: PRMTrainConfig, base_model: str, *, seed: int = 0, log=print, progress=_no_progress) -> dict:
    """Train, evaluate, save to ``cfg.out``; returns the held-out metrics (also in ``prm.json``).
    ``progress(description, total)``: a context manager yielding ``advance()``."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers import AutoTokenizer

    rows = load_labels(cfg.labels)
    train_rows, held = split(rows, cfg.heldout_frac, seed)
    train_rows = [r for r in train_rows if positions(r)[0]]
    if not train_rows:
        raise LabelError(f"{cfg.labels}: no labelled code lines in the training split ({len(rows)} rows)")
    torch.manual_seed(seed)
    torch.set_num_threads(cfg.threads)
    tok = AutoTokenizer.from_pretrained(base_model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    dtype = resolve_dtype(cfg.dtype, "cpu")
    model = PRM.from_pretrained(base_model, loss=cfg.loss, dtype=dtype)
    if cfg.lora_rank:  # only the adapters and the head train; saved merged
        add_value_adapters(model, cfg.lora_rank, cfg.lora_alpha, 0.0, [])
    trainable = trainable_count(model)

    deepspeed, _ = init_deepspeed()  # one process: world size 1, a free port
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config={
            "train_micro_batch_size_per_gpu": cfg.batch_size, "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": cfg.zero_stage}, "gradient_clipping": 1.0, "steps_per_print": 1 << 30,
            "bf16": {"enabled": dtype == "bfloat16"},
            "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "weight_decay": 0.0, "torch_adam": True}}})

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tb = SummaryWriter(str(out / "tb"))
    before = evaluate(model, held, pad_id)
    log(f"PRM: {len(train_rows)} training responses, {len(held)} held out, {trainable:,} trainable parameters "
        f"({dtype}{f', LoRA rank {cfg.lora_rank}' if cfg.lora_rank else ''}); held-out before training: {before}")
    rng, step, t0 = random.Random(seed), 0, time.perf_counter()
    steps_total = cfg.epochs * -(-len(train_rows) // cfg.batch_size)
    with progress("PRM training", steps_total) as advance, open(out / "train_log.jsonl", "w") as jl:
        for epoch in range(cfg.epochs):
            order = train_rows[:]
            rng.shuffle(order)
            for b in range(0, len(order), cfg.batch_size):
                batch = order[b: b + cfg.batch_size]
                ids, att = pad([r["prompt_ids"] + r["response_ids"] for r in batch], pad_id, engine.device)
                labels = torch.zeros(ids.shape, device=engine.device)
                mask = torch.zeros(ids.shape, dtype=torch.bool, device=engine.device)
                for i, r in enumerate(batch):
                    p, y = positions(r)
                    labels[i, p], mask[i, p] = torch.tensor(y), True
                engine.train()
                loss = model.loss(engine(ids, att), labels, mask)
                engine.backward(loss)
                engine.step()
                step += 1
                row = {"step": step, "epoch": epoch, "loss": loss.item(), "lines": int(mask.sum())}
                jl.write(json.dumps(row) + "\n")
                tb.add_scalar("prm/loss", row["loss"], step)
                advance()
    after = evaluate(model, held, pad_id)
    for k, v in after.items():
        if v is not None:
            tb.add_scalar(f"prm/heldout_{k}", v, step)
    tb.close()
    meta = {"base_model": str(base_model), "labels": str(cfg.labels), "train_responses": len(train_rows),
            "heldout_responses": len(held), "steps": step, "dtype": dtype, "lora_rank": cfg.lora_rank,
            "trainable_params": trainable, "seconds": time.perf_counter() - t0,
            "heldout_before": before, "heldout": after}
    model.save_pretrained(out, meta)
    tok.save_pretrained(str(out))
    return meta
