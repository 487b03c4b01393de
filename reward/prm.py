"""The process reward model: an LM backbone with a scalar head, read at the last token of each line.

On disk a PRM is a HF model directory (the backbone) plus ``value_head.safetensors`` (``weight``
[1, hidden], ``bias`` [1]) and ``prm.json`` (the loss it was trained with, its held-out metrics).
That is the same layout the learner's critic loads, so a PRM initialises the critic (PSGPO) as is.

Scores are in [-1, 1]: the head's output clipped (``mse``: it regresses the +-1 labels) or
``2 * sigmoid(z) - 1`` (``bce``: z is the logit of "this prefix can still be fixed").
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from proctor.learner.model import ValueModel

META = "prm.json"


class PRM(ValueModel):
    """The critic's network (``learner.model.ValueModel``: backbone + scalar head, same files on
    disk) with the PRM's loss and its [-1, 1] score."""

    def __init__(self, backbone: nn.Module, loss: str = "mse"):
        super().__init__(backbone)
        self.loss_kind = loss

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, loss: str | None = None, dtype: str = "float32") -> PRM:
        """A trained PRM directory, or any HF causal-LM directory (a fresh head at zero)."""
        model_dir = Path(model_dir)
        meta = json.loads((model_dir / META).read_text()) if (model_dir / META).exists() else {}
        return super().from_pretrained(model_dir, dtype, loss=loss or meta.get("loss", "mse"))

    def save_pretrained(self, out_dir: str | Path, meta: dict | None = None) -> None:
        super().save_pretrained(out_dir)
        (Path(out_dir) / META).write_text(json.dumps({"loss": self.loss_kind, **(meta or {})}, indent=2) + "\n")

    def to_score(self, raw: Tensor) -> Tensor:
        return raw.clamp(-1, 1) if self.loss_kind == "mse" else 2 * torch.sigmoid(raw) - 1

    def loss(self, raw: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """Mean loss over the labelled positions (``mask``), labels +-1."""
        x, y = raw[mask], labels[mask]
        if self.loss_kind == "mse":
            return torch.nn.functional.mse_loss(x, y)
        return torch.nn.functional.binary_cross_entropy_with_logits(x, (y > 0).float())


def pad(rows: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Right-padded ids and attention mask, on ``device`` (the model's)."""
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        att[i, : len(r)] = 1
    return ids.to(device), att.to(device)


@torch.no_grad()
def score_positions(model: PRM, rows: list[list[int]], positions: list[list[int]], pad_id: int,
                    batch_size: int = 8) -> list[list[float]]:
    """PRM scores in [-1, 1] at the given token positions of each row."""
    model.eval()
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for b in range(0, len(rows), batch_size):
        ids, att = pad(rows[b: b + batch_size], pad_id, device)
        scores = model.to_score(model(ids, att))
        out += [scores[i, pos].tolist() if pos else [] for i, pos in enumerate(positions[b: b + batch_size])]
    return out


def auc(scores: list[float], labels: list[float]) -> float:
    """ROC AUC of ``scores`` for labels > 0 (Mann-Whitney, ties counted half); nan if one class is missing."""
    pos = [s for s, y in zip(scores, labels) if y > 0]
    neg = [s for s, y in zip(scores, labels) if y <= 0]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))
