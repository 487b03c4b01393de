"""The learner's input: one ``Sample`` per episode, padded into tensors, cut into micro-batches.

A sample is one whole multi-turn conversation (token in, token out): prompt, reply 1, feedback,
reply 2, ... ``action_mask`` marks the reply tokens (the only tokens trained on); ``turn_ends[k]``
is the index of the last prompt token before reply k (where the turn-level critic is read) and
``turn_spans[k]`` the reply's [start, end). ``turn_rewards[k]`` is the outcome reward after reply k
(RLEF); ``token_rewards`` is the optional dense per-token reward (process reward, same length as
``token_ids``, counted only on action tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from proctor.learner.ppo import group_advantages


class SampleError(ValueError):
    """A malformed sample; the message names the sample and the field."""


@dataclass
class Sample:
    token_ids: list[int]
    action_mask: list[int]
    logprobs: list[float]                      # behaviour logprob of each action token, 0.0 elsewhere
    turn_ends: list[int]
    turn_spans: list[tuple[int, int]]
    turn_rewards: list[float]
    token_rewards: list[float] | None = None
    version: int = 0                           # weight version that sampled it
    id: str = ""                               # the problem: episodes with the same id form a group
    advantage: float | None = None             # critic-free modes: the episode's advantage (all its tokens)

    def validate(self, index: int = 0) -> None:
        where = f"sample {index}" + (f" (id {self.id!r})" if self.id else "")
        n = len(self.token_ids)

        def bad(name: str, why: str) -> SampleError:
            return SampleError(f"{where}: field {name}: {why}")

        if n < 2:
            raise bad("token_ids", f"needs at least 2 tokens, got {n}")
        for name in ("action_mask", "logprobs") + (("token_rewards",) if self.token_rewards is not None else ()):
            if len(getattr(self, name)) != n:
                raise bad(name, f"length {len(getattr(self, name))} != len(token_ids) {n}")
        k = len(self.turn_ends)
        if k == 0:
            raise bad("turn_ends", "no turns")
        if len(self.turn_spans) != k or len(self.turn_rewards) != k:
            raise bad("turn_spans/turn_rewards", f"need one per turn ({k}), got {len(self.turn_spans)}/"
                      f"{len(self.turn_rewards)}")
        prev_end = 0
        for i, (end, (a, b)) in enumerate(zip(self.turn_ends, self.turn_spans)):
            if not (prev_end <= end < a <= b <= n) or end != a - 1:
                raise bad("turn_spans", f"turn {i}: prompt end {end} and reply [{a}, {b}) do not fit "
                          f"(need reply to start right after the prompt, within {n} tokens, in order)")
            if a == b:
                raise bad("turn_spans", f"turn {i}: empty reply")
            if any(self.action_mask[t] != 1 for t in range(a, b)):
                raise bad("action_mask", f"turn {i}: reply tokens [{a}, {b}) must all be actions")
            prev_end = b
        actions = sum(1 for m in self.action_mask if m)
        if actions != sum(b - a for a, b in self.turn_spans):
            raise bad("action_mask", "action tokens outside the turn spans")


@dataclass
class Batch:
    """Padded tensors of B samples: [B, T] per token, [B, K] per turn (K = most turns)."""

    input_ids: Tensor        # long, padded with pad_id
    attention_mask: Tensor   # long, 1 on real tokens
    action_mask: Tensor      # bool
    old_logprobs: Tensor     # float, behaviour logprobs (0 off-action)
    token_turn: Tensor       # long, turn index of each action token, -1 elsewhere
    token_rewards: Tensor    # float, dense reward on action tokens
    turn_ends: Tensor        # long [B, K], -1 for missing turns
    turn_last: Tensor        # long [B, K], index of each reply's last token, -1 for missing turns
    turn_mask: Tensor        # bool [B, K]
    turn_rewards: Tensor     # float [B, K]
    versions: Tensor         # long [B]
    lengths: Tensor          # long [B]
    advantages: Tensor       # float [B], the samples' episode advantages (nan when not given)
    extra: dict[str, Tensor] = field(default_factory=dict)  # per-token [B, T] / per-turn [B, K] results
    info: RowInfo | None = None  # host-side counts of each row (``rows()``)

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def rows(self) -> RowInfo:
        """The batch's ``RowInfo``: kept from ``collate`` on, else read off the tensors once."""
        if self.info is None:
            self.info = RowInfo.of(self)
        return self.info

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device`` (the device of the model it will meet)."""
        fields = {name: getattr(self, name).to(device) for name in _TENSORS}
        return Batch(**fields, extra={name: x.to(device) for name, x in self.extra.items()}, info=self.rows())

    def take(self, rows: list[int] | Tensor, multiple: int = 1) -> Batch:
        """Rows ``rows``, cropped to their longest sample rounded up to a multiple of ``multiple`` (so a
        bucket of short samples stays short, and micro-batches come in few shapes: ``round_up``)."""
        info = self.rows().take(rows.tolist() if isinstance(rows, Tensor) else rows)
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)
        t = min(round_up(max(info.lengths), multiple), self.input_ids.shape[1])
        k = max(info.turns)

        def cut(x: Tensor) -> Tensor:
            x = x[rows]
            if x.dim() == 2 and x.shape[1] == self.input_ids.shape[1]:
                return x[:, :t]
            if x.dim() == 2 and x.shape[1] == self.turn_mask.shape[1]:
                return x[:, :k]
            return x

        fields = {name: cut(getattr(self, name)) for name in _TENSORS}
        return Batch(**fields, extra={name: cut(x) for name, x in self.extra.items()}, info=info)


_TENSORS = [name for name in Batch.__dataclass_fields__ if name not in ("extra", "info")]


@dataclass(frozen=True)
class RowInfo:
    """What the learner needs to know of each row of a ``Batch`` without asking the device: on a GPU
    every such question (``int(t.max())``, ``nonzero``, ``bool(mask.all())``) is a host-device
    synchronisation that stalls the CPU until the GPU has drained its queue, so a micro-batch loop
    asking it leaves the GPU idle while the CPU queues the next kernels. Kept on the host from
    ``collate`` on, cut with the rows by ``Batch.take``."""

    lengths: list[int]    # real tokens
    turns: list[int]      # turns
    actions: list[int]    # action tokens (never the first token: it predicts none)
    right_padded: bool    # every row's real tokens come first (``forward_mask``)

    @classmethod
    def of(cls, batch: Batch) -> RowInfo:
        """Read off the tensors (one synchronisation on a GPU); ``collate`` builds it from the samples."""
        return cls(batch.lengths.tolist(), batch.turn_mask.sum(1).tolist(), batch.action_mask[:, 1:].sum(1).tolist(),
                   forward_mask(batch.attention_mask.cpu()) is None)

    def counts(self, turn: bool) -> tuple[int, int, int]:
        """Action tokens, episodes with actions, and value targets (turns if ``turn``, else action tokens)."""
        n_tok = sum(self.actions)
        return n_tok, sum(1 for a in self.actions if a), sum(self.turns) if turn else n_tok

    def take(self, rows: list[int]) -> RowInfo:
        return RowInfo([self.lengths[r] for r in rows], [self.turns[r] for r in rows],
                       [self.actions[r] for r in rows], self.right_padded)


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``. The learner pads its micro-batches (and the LM
    head's rows) this way: every new tensor shape costs the CPU kernels (oneDNN) a primitive cached
    per shape, and the allocator a differently sized block, so a learner fed arbitrary lengths grows
    its resident memory batch after batch; a few shapes, reused, keep it flat."""
    return -(-n // multiple) * multiple


def collate(samples: list[Sample], pad_id: int, multiple: int = 1) -> Batch:
    """Pad ``samples`` (validated) into one ``Batch``, its width a multiple of ``multiple``."""
    if not samples:
        raise SampleError("empty batch: no samples")
    for i, s in enumerate(samples):
        s.validate(i)
    b, t, k = len(samples), round_up(max(len(s.token_ids) for s in samples), multiple), \
        max(len(s.turn_ends) for s in samples)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    attention = torch.zeros((b, t), dtype=torch.long)
    action = torch.zeros((b, t), dtype=torch.bool)
    old_lp = torch.zeros((b, t))
    token_turn = torch.full((b, t), -1, dtype=torch.long)
    token_rewards = torch.zeros((b, t))
    turn_ends = torch.full((b, k), -1, dtype=torch.long)
    turn_last = torch.full((b, k), -1, dtype=torch.long)
    turn_rewards = torch.zeros((b, k))
    for i, s in enumerate(samples):
        n = len(s.token_ids)
        input_ids[i, :n] = torch.tensor(s.token_ids)
        attention[i, :n] = 1
        action[i, :n] = torch.tensor(s.action_mask, dtype=torch.bool)
        old_lp[i, :n] = torch.tensor(s.logprobs)
        if s.token_rewards is not None:
            token_rewards[i, :n] = torch.tensor(s.token_rewards)
        for j, (end, (a, z)) in enumerate(zip(s.turn_ends, s.turn_spans)):
            token_turn[i, a:z] = j
            turn_ends[i, j], turn_last[i, j] = end, z - 1
        turn_rewards[i, :len(s.turn_rewards)] = torch.tensor(s.turn_rewards)
    token_rewards = torch.where(action, token_rewards, torch.zeros(()))
    old_lp = torch.where(action, old_lp, torch.zeros(()))
    info = RowInfo([len(s.token_ids) for s in samples], [len(s.turn_ends) for s in samples],
                   [sum(1 for m in s.action_mask[1:] if m) for s in samples], right_padded=True)
    return Batch(input_ids, attention, action, old_lp, token_turn, token_rewards, turn_ends, turn_last,
                 turn_ends >= 0, turn_rewards, torch.tensor([s.version for s in samples]),
                 torch.tensor(info.lengths),
                 torch.tensor([float("nan") if s.advantage is None else s.advantage for s in samples]), info=info)


def forward_mask(attention_mask: Tensor, right_padded: bool | None = None) -> Tensor | None:
    """The attention mask a causal forward needs: None for a right-padded batch (every row's ones
    come first, as ``collate`` pads), else ``attention_mask``. Under a causal mask no
    real token attends to the pads after it, so its outputs are the same without the padding mask,
    and without one the attention runs its causal kernel, which skips the masked half and builds no
    [B, 1, T, T] mask (bf16 flash attention on this CPU, forward + backward: 1.4x). The pads' own
    outputs are never read (the losses mask them). ``right_padded``: already known (``RowInfo``), so
    the mask is not read (on a GPU, reading it waits for the device)."""
    if right_padded is None:
        right_padded = bool((attention_mask.cummin(dim=1).values == attention_mask).all())
    return None if right_padded else attention_mask


def episode_return(s: Sample) -> float:
    """An episode's total reward: its turns' outcome rewards plus its dense rewards on action tokens."""
    dense = sum(r for r, m in zip(s.token_rewards, s.action_mask) if m) if s.token_rewards is not None else 0.0
    return float(sum(s.turn_rewards) + dense)


def assign_group_advantages(samples: list[Sample], kind: str, negative_scale: float = 1.0) -> None:
    """Set each sample's ``advantage`` from its group (same ``id``) in this batch (critic-free modes).
    Must see the whole rollout batch: groups span learner workers."""
    returns = [episode_return(s) for s in samples]
    for s, a in zip(samples, group_advantages(returns, [s.id for s in samples], kind, negative_scale=negative_scale)):
        s.advantage = a


def informative(samples: list[Sample], tol: float = 1e-9) -> list[Sample]:
    """The samples whose group (same ``id``) holds episodes of different returns: in grpo / rloo a
    uniform group's advantages are all 0, so it adds no policy gradient, only compute."""
    spread: dict[str, list[float]] = {}
    for s in samples:
        spread.setdefault(s.id, []).append(episode_return(s))
    return [s for s in samples if max(spread[s.id]) - min(spread[s.id]) > tol]


def bucket_count(lengths: list[int], max_tokens: int) -> int:
    """How many micro-batches length-bucketing needs so that rows x longest <= ``max_tokens`` each
    (a sample longer than the budget gets a micro-batch of its own)."""
    count, rows, longest = 0, 0, 0
    for n in sorted(lengths, reverse=True):
        if rows and (rows + 1) * max(longest, n) > max_tokens:
            count, rows, longest = count + 1, 0, 0
        rows, longest = rows + 1, max(longest, n)
    return count + (rows > 0)


def buckets(rows: list[int], lengths: list[int], count: int) -> list[list[int]]:
    """Split ``rows`` into ``count`` micro-batches of similar lengths (sorted by length, then cut so
    each holds about the same number of padded tokens). ``count`` may exceed what the token budget
    needs (to match other workers); a micro-batch is never empty unless there are fewer rows."""
    order = sorted(rows, key=lambda r: lengths[r], reverse=True)
    count = max(1, min(count, len(order)))
    out: list[list[int]] = []
    start = 0
    for c in range(count):
        left = count - c
        # Greedy: keep adding rows while this micro-batch's padded tokens stay under an equal share
        # of what is left, but leave at least one row for each later micro-batch.
        share = sum(lengths[r] for r in order[start:]) / left
        end = start + 1
        while end < len(order) - (left - 1) and (end - start + 1) * lengths[order[start]] <= share:
            end += 1
        if left == 1:
            end = len(order)
        out.append(order[start:end])
        start = end
    return out


def padding_stats(lengths: list[int], groups: list[list[int]]) -> dict[str, float]:
    """Real vs padded tokens of a micro-batch split (how much length bucketing saves)."""
    real = sum(lengths)
    padded = sum(len(g) * max(lengths[r] for r in g) for g in groups if g)
    return {"real_tokens": real, "padded_tokens": padded, "padding_frac": 1 - real / padded if padded else 0.0}
