"""The learner's log-probability path (``learner.model.action_logprobs``): the LM head in chunks on
the action positions alone, and forwards without a padding mask for right-padded batches."""

import pytest
import torch


@pytest.mark.parametrize("lora", [False, True])
def test_chunked_logprobs_equal_the_full_head(tiny_model_dir, lora):
    """learner.logprob_chunk_tokens: the head on the action tokens in chunks (recomputed in the
    backward) gives the full head's log-probabilities, entropies and gradients."""
    from proctor.learner.lora import add_adapters
    from proctor.learner.model import action_logprobs, load_policy

    torch.manual_seed(0)
    model = load_policy(tiny_model_dir)
    if lora:
        model = add_adapters(model, 4, None, 0.0, [])
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)  # peft starts B at 0: give the adapters a gradient path
    ids = torch.randint(0, model.config.vocab_size, (3, 40))
    attention = torch.ones_like(ids)
    attention[2, 30:] = 0                                        # a padded row
    action = torch.zeros(3, 40, dtype=torch.bool)
    action[0, 10:25], action[1, 20:40], action[2, 5:30] = True, True, True
    out = {}
    # 7: several chunks, the last one short; (7, 4): each chunk's rows padded to a multiple of 4
    for chunk, multiple in ((0, 1), (7, 1), (7, 4)):
        model.zero_grad()
        lp, ent = action_logprobs(model, ids, attention, action, entropy="grad", chunk_tokens=chunk,
                                  multiple=multiple)
        (lp.sum() + 0.1 * ent.sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        out[chunk, multiple] = lp.detach(), ent.detach(), grads
    lp0, ent0, g0 = out[0, 1]
    assert (lp0[~action] == 0).all() and (lp0[action] < 0).all() and g0.norm() > 0
    for lp7, ent7, g7 in (out[7, 1], out[7, 4]):
        assert torch.allclose(lp0, lp7, atol=1e-5) and torch.allclose(ent0, ent7, atol=1e-4)
        # Equal up to fp32 rounding, which depends on the matmul kernel the CPU picks for a chunk's
        # shape (a 7-row head matmul sums in another order): measured against the gradient's scale,
        # not element by element (an element that nearly cancels carries the whole rounding).
        assert torch.allclose(g0, g7, rtol=1e-4, atol=1e-5 * g0.abs().max())
        assert (g0 - g7).norm() < 1e-5 * g0.norm()


def test_right_padded_batches_run_without_a_padding_mask(tiny_model_dir):
    """learner.batch.forward_mask: a right-padded batch runs under the causal mask alone, and its
    rows' log-probabilities equal each row's own, unpadded; a left-padded batch keeps its mask."""
    from proctor.learner.batch import forward_mask
    from proctor.learner.model import action_logprobs, load_policy

    right, left = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]), torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert forward_mask(right) is None and forward_mask(left) is left
    torch.manual_seed(0)
    model = load_policy(tiny_model_dir)
    ids = torch.randint(0, model.config.vocab_size, (3, 40))
    lengths = [40, 26, 9]
    attention = torch.zeros_like(ids)
    action = torch.zeros(3, 40, dtype=torch.bool)
    for i, n in enumerate(lengths):
        attention[i, :n] = 1
        action[i, 5:n] = True
    with torch.no_grad():
        assert forward_mask(attention) is None
        batched, _ = action_logprobs(model, ids, None, action)
        # the count known on the host (the learner's RowInfo): the same positions, found without a read back
        counted, _ = action_logprobs(model, ids, None, action, n_actions=int(action[:, 1:].sum()))
        assert torch.equal(batched, counted)
        for i, n in enumerate(lengths):
            alone, _ = action_logprobs(model, ids[i:i + 1, :n], attention[i:i + 1, :n], action[i:i + 1, :n])
            assert torch.allclose(batched[i, :n], alone[0], atol=1e-5), i
            assert (batched[i, n:] == 0).all()
