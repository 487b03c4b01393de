import math

import pytest
import torch

from proctor.learner import ppo
from proctor.learner.ppo import (
    broadcast_turns,
    explained_variance,
    kl_penalty,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    policy_loss,
    token_gae,
    turn_gae,
    value_loss,
)

# prompt (0), turn-1 reply (1..3), feedback (4..5), turn-2 reply (6..7), padding (8..9)
GAP_MASK = [0, 1, 1, 1, 0, 0, 1, 1, 0, 0]


def ref_gae(rewards, values, mask, gamma, lam):
    """Plain-Python GAE over the masked positions of each row, value 0 after the last one."""
    adv = [[0.0] * len(row) for row in rewards]
    ret = [[0.0] * len(row) for row in rewards]
    for b in range(len(rewards)):
        steps = [t for t, m in enumerate(mask[b]) if m]
        last = 0.0
        for i in reversed(range(len(steps))):
            t = steps[i]
            next_v = values[b][steps[i + 1]] if i + 1 < len(steps) else 0.0
            delta = rewards[b][t] + gamma * next_v - values[b][t]
            last = delta + gamma * lam * last
            adv[b][t] = last
            ret[b][t] = last + values[b][t]
    return adv, ret


def random_batch(seed, b=4, t=12, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(b, t, generator=g, dtype=dtype)
    values = torch.randn(b, t, generator=g, dtype=dtype)
    mask = torch.rand(b, t, generator=g) < 0.6
    mask[0] = torch.tensor(GAP_MASK + [0] * (t - len(GAP_MASK)), dtype=torch.bool)
    mask[1] = False  # a row with no action at all
    return rewards, values, mask


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 1.0), (1.0, 0.95), (0.95, 1.0), (0.95, 0.95)])
def test_token_gae_matches_loop_reference(seed, gamma, lam):
    rewards, values, mask = random_batch(seed)
    adv, ret = token_gae(rewards, values, mask.float(), gamma, lam)
    ref_adv, ref_ret = ref_gae(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(ref_adv, dtype=adv.dtype))
    torch.testing.assert_close(ret, torch.tensor(ref_ret, dtype=ret.dtype))
    assert adv.dtype == torch.float64
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_token_gae_skips_feedback_gap():
    mask = torch.tensor([GAP_MASK], dtype=torch.bool)
    values = torch.arange(10, dtype=torch.float32).unsqueeze(0) * 0.1 + 1.0
    values[0, 4:6] = 100.0  # feedback tokens: must not be bootstrapped from
    rewards = torch.zeros(1, 10)
    rewards[0, 7] = 1.0
    rewards[0, 4] = 50.0  # a reward on a non-action token is ignored
    gamma, lam = 0.9, 0.8
    adv, _ = token_gae(rewards, values, mask, gamma, lam)
    v = values[0]
    d7 = 1.0 - v[7]
    d6 = gamma * v[7] - v[6]
    d3 = gamma * v[6] - v[3]  # last token of reply 1 bootstraps from first token of reply 2
    torch.testing.assert_close(adv[0, 7], d7)
    torch.testing.assert_close(adv[0, 6], d6 + gamma * lam * d7)
    torch.testing.assert_close(adv[0, 3], d3 + gamma * lam * (d6 + gamma * lam * d7))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gamma_lam_one_gives_reward_to_go(seed):
    rewards, values, mask = random_batch(seed)
    _, ret = token_gae(rewards, values, mask, 1.0, 1.0)
    masked_r = torch.where(mask, rewards, torch.zeros_like(rewards))
    to_go = masked_r.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(ret, torch.where(mask, to_go, torch.zeros_like(to_go)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 1.0), (1.0, 0.95), (0.95, 0.95)])
def test_turn_gae_matches_loop_reference(seed, gamma, lam):
    g = torch.Generator().manual_seed(seed)
    b, k = 6, 3
    rewards = torch.randn(b, k, generator=g)
    values = torch.randn(b, k, generator=g)
    n_turns = torch.randint(1, k + 1, (b,), generator=g)
    turn_mask = torch.arange(k).unsqueeze(0) < n_turns.unsqueeze(1)
    adv, ret = turn_gae(rewards, values, turn_mask, gamma, lam)
    ref_adv, ref_ret = ref_gae(rewards.tolist(), values.tolist(), turn_mask.tolist(), gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(ref_adv))
    torch.testing.assert_close(ret, torch.tensor(ref_ret))


def test_turn_gae_rlef_terminal_reward():
    # gamma = lam = 1, reward only at the last turn: every turn's return is the final reward
    rewards = torch.tensor([[0.0, 0.0, 1.0], [-0.2, -1.0, 0.0]])
    values = torch.tensor([[0.1, 0.5, 0.7], [0.0, 0.3, 9.0]])
    turn_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = turn_gae(rewards, values, turn_mask, 1.0, 1.0)
    torch.testing.assert_close(ret, torch.tensor([[1.0, 1.0, 1.0], [-1.2, -1.0, 0.0]]))
    torch.testing.assert_close(adv, ret - values * turn_mask)


def test_broadcast_turns_puts_turn_value_on_its_reply_tokens():
    token_turn = torch.tensor([[-1, 0, 0, 0, -1, -1, 1, 1, -1, -1], [-1, -1, 0, 0, 0, 0, -1, -1, -1, -1]])
    x_turn = torch.tensor([[5.0, 7.0], [-3.0, 11.0]])
    out = broadcast_turns(x_turn, token_turn)
    expected = torch.tensor([[0, 5, 5, 5, 0, 0, 7, 7, 0, 0], [0, 0, -3, -3, -3, -3, 0, 0, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(out, expected)


def test_policy_loss_ratio_one():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(3, 8, generator=g)
    adv = torch.randn(3, 8, generator=g)
    mask = torch.rand(3, 8, generator=g) < 0.7
    loss, stats = policy_loss(lp, lp.clone(), adv, mask, 0.2)
    torch.testing.assert_close(loss, -adv[mask].mean())
    assert stats["clip_frac"].item() == 0.0
    assert abs(stats["approx_kl"].item()) < 1e-7


def test_policy_loss_clipping_and_gradients():
    old = torch.zeros(1, 4)
    # ratio 2 with A > 0 (clipped), ratio 2 with A < 0 (not clipped: pessimistic),
    # ratio 0.5 with A < 0 (clipped), ratio 1.1 with A > 0 (inside the trust region)
    lp = torch.log(torch.tensor([[2.0, 2.0, 0.5, 1.1]])).requires_grad_()
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    loss, stats = policy_loss(lp, old, adv, torch.ones(1, 4), 0.2)
    expected = (-1.0 * 1.2 + 1.0 * 2.0 + 1.0 * 0.8 - 1.0 * 1.1) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["clip_frac"].item() == pytest.approx(0.5)
    loss.backward()
    grad = lp.grad[0]
    assert grad[0] == 0 and grad[2] == 0
    assert grad[1] != 0 and grad[3] != 0
    assert grad[1].item() == pytest.approx(2.0 / 4, rel=1e-5)  # d(-A r)/dlogp = -A r / N with A = -1, r = 2


def test_aggregate_token_mean_and_seq_mean_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 0.0], [10.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)  # row 3: no action tokens
    assert ppo.aggregate(x, mask, "token_mean").item() == pytest.approx(16 / 4)
    assert ppo.aggregate(x, mask, "seq_mean").item() == pytest.approx((2 + 10) / 2)
    with pytest.raises(ValueError, match="seq_mean"):
        ppo.aggregate(x, mask, "sum")
    # At ratio 1 the surrogate is -A: seq_mean averages each episode's mean advantage.
    adv = torch.tensor([[1.0, 1.0, 1.0, 0.0], [-3.0, 0.0, 0.0, 0.0], [0.0] * 4])
    lp = torch.zeros(3, 4)
    loss, _ = ppo.policy_loss(lp, lp, adv, mask, 0.2, "seq_mean")
    assert loss.item() == pytest.approx(-(1 - 3) / 2)
    assert ppo.policy_loss(lp, lp, adv, mask, 0.2)[0].item() == pytest.approx(-(3 - 3) / 4)


def test_policy_loss_masked_entries_have_no_influence():
    g = torch.Generator().manual_seed(1)
    lp = torch.randn(3, 8, generator=g)
    old = lp + 0.3 * torch.randn(3, 8, generator=g)
    adv = torch.randn(3, 8, generator=g)
    mask = torch.rand(3, 8, generator=g) < 0.6
    lp1 = lp.clone().requires_grad_()
    loss1, stats1 = policy_loss(lp1, old, adv, mask, 0.2)
    loss1.backward()
    garbage = ~mask
    lp2 = lp.clone()
    lp2[garbage] = 1e4
    old2, adv2 = old.clone(), adv.clone()
    old2[garbage] = float("nan")
    adv2[garbage] = -1e6
    lp2.requires_grad_()
    loss2, stats2 = policy_loss(lp2, old2, adv2, mask.float(), 0.2)
    loss2.backward()
    torch.testing.assert_close(loss1, loss2)
    for key in stats1:
        torch.testing.assert_close(stats1[key], stats2[key])
    assert (lp1.grad[garbage] == 0).all() and (lp2.grad[garbage] == 0).all()
    torch.testing.assert_close(lp1.grad, lp2.grad)
    assert (lp1.grad[mask] != 0).any()


def test_value_loss_clipping_hand_example():
    old = torch.tensor([[0.0, 0.0, 0.0, 123.0]])
    values = torch.tensor([[1.0, 1.0, 0.1, -50.0]], requires_grad=True)
    returns = torch.tensor([[1.0, 0.0, 0.5, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # a: unclipped 0, clipped (0.2 - 1)^2 = 0.64 -> 0.64 (clipped active)
    # b: unclipped 1, clipped 0.2^2 = 0.04 -> 1.0; c: inside the clip range, 0.4^2 = 0.16
    loss, stats = value_loss(values, old, returns, mask, 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.0 + 0.16) / 3)
    assert stats["clip_frac"].item() == pytest.approx(1 / 3)
    loss.backward()
    grad = values.grad[0]
    assert grad[0] == 0 and grad[3] == 0
    assert grad[1].item() == pytest.approx(1.0 / 3)  # 0.5 * 2 * (1 - 0) / 3
    assert grad[2].item() == pytest.approx((0.1 - 0.5) / 3)


def test_kl_per_token_and_geometric():
    g = torch.Generator().manual_seed(0)
    lp, ref = torch.randn(3, 9, generator=g), torch.randn(3, 9, generator=g)
    mask = torch.rand(3, 9, generator=g) < 0.6
    mask[:, 0] = True
    per_token = kl_penalty(lp, ref, mask, "per_token")
    torch.testing.assert_close(per_token, torch.where(mask, lp - ref, torch.zeros_like(lp)))
    geo = kl_penalty(lp, ref, mask, "geometric")
    assert geo.shape == (3,)
    for b in range(3):
        torch.testing.assert_close(geo[b], (lp[b] - ref[b])[mask[b]].mean())
    with pytest.raises(ValueError):
        kl_penalty(lp, ref, mask, "nope")


def test_kl_geometric_is_length_normalised():
    d = 0.3
    short_mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0]])
    long_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    ref = torch.zeros(1, 8)
    lp = torch.full((1, 8), d)
    geo_short = kl_penalty(lp, ref, short_mask, "geometric")
    geo_long = kl_penalty(lp, ref, long_mask, "geometric")
    torch.testing.assert_close(geo_short, geo_long)
    torch.testing.assert_close(geo_short, torch.tensor([d]))
    sum_short = kl_penalty(lp, ref, short_mask, "per_token").sum()
    sum_long = kl_penalty(lp, ref, long_mask, "per_token").sum()
    assert sum_long.item() == pytest.approx(2 * sum_short.item())


def test_kl_geometric_segments_per_turn():
    token_turn = torch.tensor([[-1, 0, 0, 0, -1, -1, 1, 1, -1, -1], [-1, 0, 0, -1, -1, -1, -1, -1, -1, -1]])
    mask = token_turn >= 0
    lp = torch.tensor([[9.0, 1, 2, 3, 9, 9, 4, 8, 9, 9], [9.0, -1, -3, 9, 9, 9, 9, 9, 9, 9]])
    ref = torch.zeros_like(lp)
    kl = kl_penalty(lp, ref, mask, "geometric", segments=token_turn, num_segments=3)
    torch.testing.assert_close(kl, torch.tensor([[2.0, 6.0, 0.0], [-2.0, 0.0, 0.0]]))
    assert kl_penalty(lp, ref, mask, "geometric", segments=token_turn).shape == (2, 2)


def test_masked_whiten_mean_zero_std_one():
    g = torch.Generator().manual_seed(0)
    x = 5 + 3 * torch.randn(4, 16, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 16, generator=g) < 0.5
    w = masked_whiten(x, mask)
    assert w[mask].mean().item() == pytest.approx(0.0, abs=1e-9)
    assert w[mask].std().item() == pytest.approx(1.0, abs=1e-6)
    assert (w[~mask] == 0).all()
    x2 = x.clone()
    x2[~mask] = float("inf")
    torch.testing.assert_close(masked_whiten(x2, mask), w)
    kept = masked_whiten(x, mask, shift_mean=False)
    assert kept[mask].mean().item() == pytest.approx(x[mask].mean().item(), rel=1e-9)
    assert kept[mask].std().item() == pytest.approx(1.0, abs=1e-6)


def test_masked_mean_and_var():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert masked_mean(x, mask).item() == pytest.approx(2.75)
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 4.0]))
    assert masked_var(x, mask).item() == pytest.approx(torch.tensor([1.0, 2.0, 3.0, 5.0]).var().item())
    torch.testing.assert_close(masked_var(x, mask, dim=1), torch.tensor([0.5, 2.0]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_explained_variance():
    g = torch.Generator().manual_seed(0)
    returns = torch.randn(4, 10, generator=g)
    mask = torch.rand(4, 10, generator=g) < 0.7
    values = returns.clone()
    values[~mask] = 1e6
    assert explained_variance(values, returns, mask).item() == pytest.approx(1.0)
    const = torch.full_like(returns, 0.37)
    assert explained_variance(const, returns, mask).item() == pytest.approx(0.0, abs=1e-5)
    noisy = returns + 0.5 * torch.randn(4, 10, generator=g)
    assert 0.0 < explained_variance(noisy, returns, mask).item() < 1.0
    assert math.isnan(explained_variance(const, torch.ones_like(returns), mask).item())


def _shaping_case():
    # One episode, 2 turns: prompt [0, 1], reply 1 = [2, 3], feedback [4], reply 2 = [5, 6, 7].
    token_turn = torch.tensor([[-1, -1, 0, 0, -1, 1, 1, 1]])
    lp = torch.tensor([[0.0, 0.0, -1.0, -1.0, 0.0, -2.0, -2.0, -2.0]])
    ref = torch.tensor([[9.0, 9.0, -1.5, -0.5, 9.0, -2.3, -2.0, -2.6]])  # garbage off-action
    dense = torch.tensor([[5.0, 5.0, 0.1, 0.2, 5.0, 0.0, -0.3, 0.0]])   # garbage off-action
    turn_r = torch.tensor([[-0.2, 1.0]])
    return token_turn, lp, ref, dense, turn_r


def test_turn_rewards_shaped_geometric_and_per_token():
    token_turn, lp, ref, dense, turn_r = _shaping_case()
    # log-ratios: turn 0: +0.5, -0.5 (mean 0, sum 0); turn 1: +0.3, 0, +0.6 (mean 0.3, sum 0.9)
    geo = ppo.turn_rewards_shaped(turn_r, dense, lp, ref, token_turn, "geometric", 0.1)
    torch.testing.assert_close(geo, torch.tensor([[-0.2 + 0.3 - 0.0, 1.0 - 0.3 - 0.03]]))
    per = ppo.turn_rewards_shaped(turn_r, dense, lp, ref, token_turn, "per_token", 0.1)
    torch.testing.assert_close(per, torch.tensor([[-0.2 + 0.3, 1.0 - 0.3 - 0.09]]))


def test_token_rewards_shaped_puts_outcome_on_last_reply_token():
    token_turn, lp, ref, dense, turn_r = _shaping_case()
    turn_last = torch.tensor([[3, 7]])
    geo = ppo.token_rewards_shaped(turn_r, turn_last, dense, lp, ref, token_turn, "geometric", 0.1)
    torch.testing.assert_close(geo, torch.tensor([[0, 0, 0.1, 0.2 - 0.2, 0, 0, -0.3, 1.0 - 0.03]]))
    per = ppo.token_rewards_shaped(turn_r, turn_last, dense, lp, ref, token_turn, "per_token", 0.1)
    torch.testing.assert_close(per, torch.tensor([[0, 0, 0.1 - 0.05, 0.2 + 0.05 - 0.2, 0, -0.03, -0.3,
                                                   1.0 - 0.06]]))


def test_token_rewards_shaped_ignores_missing_turns():
    token_turn = torch.tensor([[-1, 0, 0, -1]])
    zeros = torch.zeros(1, 4)
    out = ppo.token_rewards_shaped(torch.tensor([[1.0, 7.0]]), torch.tensor([[2, -1]]), zeros, zeros, zeros,
                                   token_turn, "geometric", 0.1)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


def test_group_advantages_by_hand():
    returns = [1.0, -1.0, -1.0, -1.0, 0.5, 0.5, 2.0]
    groups = ["a", "a", "a", "a", "b", "b", "c"]
    grpo = ppo.group_advantages(returns, groups, "grpo")
    # group a: mean -0.5, population std sqrt(0.75); b: all equal -> 0; c: alone -> 0
    assert grpo[0] == pytest.approx(1.5 / math.sqrt(0.75), rel=1e-5)
    assert grpo[1:4] == pytest.approx([-0.5 / math.sqrt(0.75)] * 3, rel=1e-5)
    assert grpo[4:] == [0.0, 0.0, 0.0]
    rloo = ppo.group_advantages(returns, groups, "rloo")
    assert rloo[:4] == pytest.approx([2.0, -2 / 3, -2 / 3, -2 / 3])  # R - mean of the other three
    assert rloo[4:] == [0.0, 0.0, 0.0]
    assert sum(rloo[:4]) == pytest.approx(0.0)
    # order does not matter: groups are keys, not runs
    shuffled = ppo.group_advantages([returns[i] for i in (3, 0, 5, 1, 6, 4, 2)], [groups[i] for i in (3, 0, 5, 1, 6, 4, 2)])
    assert shuffled == pytest.approx([grpo[i] for i in (3, 0, 5, 1, 6, 4, 2)])
    with pytest.raises(ValueError, match="2 returns for 1 group keys"):
        ppo.group_advantages([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="unknown group advantage 'ppo'"):
        ppo.group_advantages([1.0], ["a"], "ppo")


def test_group_advantages_negative_scale_weighs_only_the_below_average_episodes():
    returns = [1.0, -1.0, -1.0, -1.0, 0.5, 0.5, 3.0, 0.0]
    groups = ["a", "a", "a", "a", "b", "b", "c", "c"]
    for kind in ("grpo", "rloo"):
        plain = ppo.group_advantages(returns, groups, kind)
        half = ppo.group_advantages(returns, groups, kind, negative_scale=0.5)
        only_pos = ppo.group_advantages(returns, groups, kind, negative_scale=0.0)
        assert half == pytest.approx([a / 2 if a < 0 else a for a in plain])
        assert only_pos == pytest.approx([max(a, 0.0) for a in plain])
        assert half[0] == plain[0] > 0 and half[6] == plain[6] > 0  # the better episodes keep their weight
        assert sum(half[:4]) > 0 and sum(plain[:4]) == pytest.approx(0.0, abs=1e-6)  # net push up, not zero-sum
    with pytest.raises(ValueError, match=r"negative_scale 1\.5 is outside"):
        ppo.group_advantages(returns, groups, "grpo", negative_scale=1.5)


def test_negative_advantage_scale_is_a_critic_free_setting():
    from proctor.learner.config import LearnerConfig
    assert LearnerConfig(advantage="grpo", negative_advantage_scale=0.5).negative_advantage_scale == 0.5
    with pytest.raises(ValueError, match="critic-free advantages"):
        LearnerConfig(advantage="gae", negative_advantage_scale=0.5)


def test_kl_loss_k3_is_zero_at_the_reference_and_pulls_back_to_it():
    ref = torch.log_softmax(torch.randn(2, 5), -1)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert ppo.kl_loss(ref, ref, mask).item() == pytest.approx(0.0, abs=1e-7)
    lp = (ref + 0.3 * torch.randn(2, 5)).requires_grad_(True)
    garbage = torch.where(mask, lp, torch.full_like(lp, float("nan")))  # masked entries have no influence
    loss = ppo.kl_loss(garbage, ref, mask)
    d = (ref - lp.detach())[mask]
    assert loss.item() == pytest.approx((torch.exp(d) - d - 1).mean().item(), rel=1e-5) and loss.item() > 0
    loss.backward()
    assert torch.all(lp.grad[~mask] == 0)
    # gradient descent moves each logprob toward the reference's
    assert torch.all(torch.sign(-lp.grad[mask]) == torch.sign(ref[mask] - lp.detach()[mask]))


def test_masked_whiten_over_ranks_equals_whitening_the_whole_batch():
    """The learner whitens with statistics summed over data-parallel ranks (``all_sum``): two ranks'
    halves, whitened that way, are the whole batch whitened at once."""
    g = torch.Generator().manual_seed(1)
    x = 2 - 4 * torch.randn(6, 10, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 10, generator=g) < 0.6
    halves = [(x[:3], mask[:3]), (x[3:], mask[3:])]
    stats = [[masked_sum(h, m).item(), masked_sum(h * h, m).item(), m.sum().item()] for h, m in halves]

    def all_sum(_local):
        return [a + b for a, b in zip(*stats)]

    joined = torch.cat([masked_whiten(h, m, all_sum=all_sum) for h, m in halves])
    torch.testing.assert_close(joined, masked_whiten(x, mask))
    assert not torch.allclose(masked_whiten(x[:3], mask[:3]), masked_whiten(x, mask)[:3])
