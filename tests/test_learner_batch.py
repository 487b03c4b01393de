"""The learner's batch: padding, turn bookkeeping, validation and length-bucketed micro-batches."""

import random

import pytest
import torch

from proctor.learner.batch import (
    RowInfo,
    Sample,
    SampleError,
    bucket_count,
    buckets,
    collate,
    padding_stats,
    round_up,
)


def two_turn(offset: int = 0, id: str = "p") -> Sample:
    # prompt [0..2], reply 1 [3, 4], feedback [5], reply 2 [6, 7, 8]
    ids = [offset + i for i in range(9)]
    mask = [0, 0, 0, 1, 1, 0, 1, 1, 1]
    lps = [0, 0, 0, -0.5, -0.6, 0, -0.1, -0.2, -0.3]
    return Sample(ids, mask, lps, [2, 5], [(3, 5), (6, 9)], [-0.2, 1.0], token_rewards=[0.5] * 9, version=4, id=id)


def one_turn(n_prompt: int, n_reply: int) -> Sample:
    n = n_prompt + n_reply
    return Sample(list(range(n)), [0] * n_prompt + [1] * n_reply, [-1.0] * n, [n_prompt - 1],
                  [(n_prompt, n)], [1.0])


def test_collate_pads_and_indexes_turns():
    b = collate([two_turn(), one_turn(2, 2)], pad_id=99)
    assert b.input_ids.shape == (2, 9) and b.turn_mask.tolist() == [[True, True], [True, False]]
    assert b.input_ids[1].tolist() == [0, 1, 2, 3, 99, 99, 99, 99, 99]
    assert b.attention_mask[1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert b.token_turn[0].tolist() == [-1, -1, -1, 0, 0, -1, 1, 1, 1]
    assert b.turn_ends.tolist() == [[2, 5], [1, -1]] and b.turn_last.tolist() == [[4, 8], [3, -1]]
    # dense rewards and behaviour logprobs only on action tokens
    assert b.token_rewards[0].tolist() == [0, 0, 0, 0.5, 0.5, 0, 0.5, 0.5, 0.5]
    assert b.old_logprobs[1].tolist() == [0, 0, -1, -1, 0, 0, 0, 0, 0]
    assert b.versions.tolist() == [4, 0] and b.lengths.tolist() == [9, 4]


def test_take_crops_to_the_longest_row():
    b = collate([two_turn(), one_turn(2, 2), one_turn(3, 3)], pad_id=0)
    b.extra["adv"] = torch.arange(27.0).view(3, 9)
    b.extra["turn_v"] = torch.ones(3, 2)
    small = b.take([1, 2])
    assert small.input_ids.shape == (2, 6) and small.turn_mask.shape == (2, 1)
    assert small.extra["adv"].tolist() == [list(range(9, 15)), list(range(18, 24))]
    assert small.extra["turn_v"].shape == (2, 1)


def test_row_counts_stay_on_the_host_and_match_the_tensors():
    """RowInfo: collate's host-side counts equal those read off the tensors, and take() cuts them with
    the rows (so a micro-batch's width and weights never need a read from the device)."""
    b = collate([two_turn(), one_turn(2, 2), one_turn(3, 3)], pad_id=0, multiple=4)
    assert b.info == RowInfo([9, 4, 6], [2, 1, 1], [5, 2, 3], True)
    assert RowInfo.of(b) == b.info
    small = b.take([2, 1])
    assert small.info == RowInfo([6, 4], [1, 1], [3, 2], True) and small.info == RowInfo.of(small)
    assert small.input_ids.shape[1] == 6 and b.to("cpu").info == b.info
    left = collate([one_turn(2, 2), one_turn(3, 3)], pad_id=0)
    left.attention_mask = left.attention_mask.flip(1)  # not right-padded: read off the tensors it says so
    left.info = None
    assert left.rows().right_padded is False


def test_widths_round_up_to_the_pad_multiple_within_the_batch():
    """learner.pad_multiple: the batch and its micro-batches come in widths that are multiples (the
    pads carry no action, reward or attention), never wider than the batch."""
    assert [round_up(n, 4) for n in (1, 4, 5, 8)] == [4, 4, 8, 8] and round_up(7, 1) == 7
    b = collate([two_turn(), one_turn(2, 2), one_turn(3, 3)], pad_id=0, multiple=4)
    assert b.input_ids.shape == (3, 12) and b.lengths.tolist() == [9, 4, 6]
    assert not b.action_mask[:, 9:].any() and not b.attention_mask[:, 9:].any() and not b.token_rewards[:, 9:].any()
    assert b.take([1], 4).input_ids.shape == (1, 4) and b.take([1, 2], 4).input_ids.shape == (2, 8)
    assert b.take([0], 4).input_ids.shape == (1, 12) and b.take([1, 2], 5).input_ids.shape == (2, 10)
    assert b.take([0], 8).input_ids.shape == (1, 12)  # capped at the batch's width


@pytest.mark.parametrize("field,mutate,needle", [
    ("action_mask", lambda s: s.action_mask.pop(), "field action_mask: length 8"),
    ("logprobs", lambda s: s.logprobs.append(0.0), "field logprobs: length 10"),
    ("turn_spans", lambda s: s.turn_spans.__setitem__(1, (7, 9)), "turn 1"),
    ("action_mask", lambda s: s.action_mask.__setitem__(7, 0), "turn 1: reply tokens [6, 9)"),
    ("action_mask", lambda s: s.action_mask.__setitem__(0, 1), "outside the turn spans"),
    ("turn_rewards", lambda s: s.turn_rewards.pop(), "one per turn"),
])
def test_bad_samples_name_the_sample_and_field(field, mutate, needle):
    good = two_turn(id="HumanEval/7")
    bad = two_turn(id="HumanEval/9")
    mutate(bad)
    with pytest.raises(SampleError) as e:
        collate([good, bad], pad_id=0)
    assert "sample 1 (id 'HumanEval/9')" in str(e.value) and needle in str(e.value)


def test_bucket_count_respects_the_token_budget():
    assert bucket_count([10] * 8, 40) == 2
    assert bucket_count([100, 10, 10, 10], 40) == 2      # the long one alone, over budget
    assert bucket_count([30, 30, 5, 5, 5, 5], 60) == 2   # [30, 30] and the four 5s
    assert bucket_count([], 10) == 0


@pytest.mark.parametrize("seed", range(5))
def test_buckets_partition_rows_and_cut_padding(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(20, 2000) for _ in range(32)]
    rows = list(range(32))
    count = bucket_count(lengths, 4096)
    groups = buckets(rows, lengths, count)
    assert len(groups) == count and sorted(r for g in groups for r in g) == rows and all(groups)
    # forcing more micro-batches (to match another rank) still partitions the rows
    more = buckets(rows, lengths, count + 3)
    assert len(more) == count + 3 and sorted(r for g in more for r in g) == rows
    # sorted buckets waste far less than the same number of random chunks
    shuffled = rows[:]
    rng.shuffle(shuffled)
    size = -(-32 // count)
    random_groups = [shuffled[i:i + size] for i in range(0, 32, size)]
    assert padding_stats(lengths, groups)["padding_frac"] < padding_stats(lengths, random_groups)["padding_frac"]


def test_buckets_with_fewer_rows_than_count():
    assert buckets([0, 1], [5, 9], 4) == [[1], [0]]


def test_assign_group_advantages_uses_whole_episode_returns():
    from proctor.learner.batch import assign_group_advantages, episode_return

    def ep(pid, rewards, dense=None):  # prompt [0, 4), reply [4, 6), feedback [6], reply [7, 9)
        spans = [(4, 6), (7, 9)][:len(rewards)]
        n = spans[-1][1]
        mask = [0] * n
        for x, y in spans:
            mask[x:y] = [1] * (y - x)
        return Sample(list(range(n)), mask, [0.0] * n, [x - 1 for x, _ in spans], spans, rewards,
                      token_rewards=dense, id=pid)

    # dense rewards off the action tokens (prompt 0, feedback 6) do not count; on action tokens they do
    a = ep("p", [-0.2, 1.0], dense=[5.0, 0, 0, 0, 0.25, 0, 7.0, 0.25, 0])
    b, c = ep("p", [-1.0]), ep("q", [1.0])
    assert episode_return(a) == pytest.approx(1.3) and episode_return(b) == -1.0
    samples = [a, b, c]
    assign_group_advantages(samples, "rloo")
    assert [s.advantage for s in samples] == pytest.approx([2.3, -2.3, 0.0])
    assert collate(samples, 0).advantages.tolist() == pytest.approx([2.3, -2.3, 0.0])
    assign_group_advantages(samples, "rloo", negative_scale=0.5)  # learner.negative_advantage_scale
    assert [s.advantage for s in samples] == pytest.approx([2.3, -1.15, 0.0])
