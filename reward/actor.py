"""Scoring with a trained PRM: every code line of every reply of an episode, in one forward pass.

``PRMScorer`` is plain Python; ``prm_actor_class()`` wraps it as a Ray actor, and ``ProcessRewards``
is the driver's handle on that actor (scoring plus PSGPO's dense shaping). A
request is an episode's whole token sequence and its replies' spans; because the PRM is causal, one
forward over the whole conversation scores each reply's lines in their full context (earlier
turns and feedback included), exactly as the policy saw it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from proctor.reward.config import RewardConfig
from proctor.reward.lines import reply_lines
from proctor.reward.prm import PRM, score_positions
from proctor.reward.shaping import ReplyScores, dense_rewards, line_stats


class PRMScorer:
    def __init__(self, prm_dir: str | Path, threads: int = 1, batch_size: int = 4, dtype: str = "float32"):
        from transformers import AutoTokenizer

        from proctor.learner.model import resolve_dtype

        torch.set_num_threads(threads)
        self.tok = AutoTokenizer.from_pretrained(str(prm_dir))
        # On the GPU when the actor was given one (Ray exposes only the GPUs an actor asked for).
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = resolve_dtype(dtype, device)
        self.model = PRM.from_pretrained(prm_dir, dtype=self.dtype).to(device)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self.batch_size = batch_size

    def vocab(self) -> dict[str, int]:
        return self.tok.get_vocab()

    def score(self, requests: list[tuple[list[int], list[tuple[int, int]], str | None]]) -> list[list[ReplyScores]]:
        """For each (token_ids, reply spans, entry point): per reply, its lines and one score per code
        line (the lines of the code the sandbox ran: the block that defines the entry point)."""
        layouts = [[(a, reply_lines(self.tok, ids[a:b], entry)) for a, b in spans] for ids, spans, entry in requests]
        pos = [[a + ln.last_token for a, lines in lay for ln in lines if ln.scored] for lay in layouts]
        flat = score_positions(self.model, [ids for ids, _, _ in requests], pos, self.pad_id, self.batch_size)
        out = []
        for lay, scores in zip(layouts, flat):
            replies, i = [], 0
            for a, lines in lay:
                n = sum(ln.scored for ln in lines)
                replies.append(ReplyScores(a, lines, scores[i: i + n]))
                i += n
            out.append(replies)
        return out


def prm_actor_class():
    """The Ray actor class (created lazily so that importing reward does not import ray)."""
    import ray

    return ray.remote(PRMScorer)


class ProcessRewards:
    """The driver's handle on PSGPO's process reward: a PRM scoring actor (replaced once if it dies)
    and the dense shaping of its line scores."""

    def __init__(self, cfg: RewardConfig, vocab: dict[str, int], threads: int = 1):
        import ray

        self.cfg, self.replaced = cfg, 0
        self._spawn = lambda: prm_actor_class().options(num_cpus=cfg.prm_cpus).remote(
            str(Path(cfg.prm_model).resolve()), threads, dtype=cfg.prm_dtype)
        self.actor = self._spawn()
        if ray.get(self.actor.vocab.remote()) != vocab:
            raise ValueError(f"reward.prm_model {cfg.prm_model}: its tokenizer differs from the policy's; the PRM "
                             "reads the policy's token ids, so it must share the policy's vocabulary")

    def __call__(self, episodes: list) -> tuple[list[list[float]], dict]:
        """Per episode, per token: the dense reward; and the batch's PRM metrics."""
        import ray

        request = [(e.token_ids, [t.reply_span for t in e.turns], e.entry_point) for e in episodes]
        try:
            scored = ray.get(self.actor.score.remote(request))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as e:
            # replaced like engines and sandbox actors; a second loss is an error
            logging.getLogger(__name__).warning("the PRM actor died (%s): replaced, batch scored again",
                                                type(e).__name__)
            self.actor, self.replaced = self._spawn(), self.replaced + 1
            scored = ray.get(self.actor.score.remote(request))
        dense = [dense_rewards(len(e.token_ids), replies, e.solved, self.cfg.prm_weight_correct,
                               self.cfg.prm_weight_incorrect) for e, replies in zip(episodes, scored)]
        stats = line_stats([r for replies in scored for r in replies])
        return dense, {"prm/score_mean": stats["score_mean"], "prm/actors_replaced": self.replaced,
                       "prm/dense_reward_mean": sum(map(sum, dense)) / max(len(dense), 1)}

    def shutdown(self) -> None:
        import ray

        ray.kill(self.actor)
