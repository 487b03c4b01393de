"""Scoring with a trained PRM: every code line of every reply of an episode, in one forward pass.

``PRMScorer`` is plain Python; ``prm_actor_class()`` wraps it as a Ray actor for the driver. A
request is an episode's whole token sequence and its replies' spans; because the PRM is causal, one
forward over the whole conversation scores each reply's lines in their full context (earlier
turns and feedback included), exactly as the policy saw it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reward.lines import reply_lines
from reward.prm import PRM, score_positions
from reward.shaping import ReplyScores


class PRMScorer:
    def __init__(self, prm_dir: str | Path, threads: int = 1, batch_size: int = 4):
        from transformers import AutoTokenizer

        torch.set_num_threads(threads)
        self.tok = AutoTokenizer.from_pretrained(str(prm_dir))
        # On the GPU when the actor was given one (Ray exposes only the GPUs an actor asked for).
        self.model = PRM.from_pretrained(prm_dir).to("cuda" if torch.cuda.is_available() else "cpu")
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
