"""The networks a learner worker trains, built from a model dir and ``LearnerConfig``: the policy
(a causal LM, with LoRA adapters when ``learner.lora_rank``) and, for ``gae``, the critic (a
``ValueModel``, with adapters when ``learner.critic_lora_rank``), each with gradient checkpointing
and ``learner.freeze`` applied. The engines around them are ``deepspeed_setup.make_engine``'s."""

from __future__ import annotations

from torch import nn

from proctor.learner.config import LearnerConfig
from proctor.learner.lora import add_adapters, add_value_adapters
from proctor.learner.model import ValueModel, freeze, load_policy


def build_policy(model_dir: str, cfg: LearnerConfig) -> nn.Module:
    """The policy; under LoRA only its adapters train, and its reference is itself with them off."""
    policy = load_policy(model_dir, cfg.dtype)
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    if cfg.lora_rank:
        policy = add_adapters(policy, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        if cfg.gradient_checkpointing:
            policy.enable_input_require_grads()  # checkpointed blocks need a grad-carrying input
    freeze(policy, cfg.freeze)
    return policy


def build_critic(model_dir: str, cfg: LearnerConfig) -> ValueModel | None:
    """The critic (None for the critic-free grpo / rloo: no value forwards, backward or optimizer),
    from ``model_dir`` (the policy's, or a PRM's: PSGPO's critic init)."""
    if cfg.advantage != "gae":
        return None
    critic = ValueModel.from_pretrained(model_dir, cfg.dtype)
    if cfg.gradient_checkpointing:
        critic.gradient_checkpointing_enable()
    if cfg.critic_lora_rank:  # the head and the adapters train
        add_value_adapters(critic, cfg.critic_lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        if cfg.gradient_checkpointing:
            critic.backbone.enable_input_require_grads()
    freeze(critic, cfg.freeze, strict=False)  # the critic has no lm_head: only the patterns it has
    return critic
