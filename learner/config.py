from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LearnerConfig(BaseModel):
    """PPO with a KL penalty to the initial policy (defaults from the RLEF paper)."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(default=2e-7, gt=0, description="policy learning rate (peak, after warm-up)")
    critic_lr: float | None = Field(default=None, gt=0, description="critic learning rate (default: lr)")
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(default=50, ge=0, description="optimizer steps of linear lr warm-up")
    grad_clip: float = Field(default=1.0, ge=0, description="global grad-norm clip (0 = off)")
    clip_eps: float = Field(default=0.2, gt=0, description="PPO's clip range of the policy ratio")
    value_clip_eps: float = Field(default=0.2, gt=0, description="clip range of the critic's value update (gae)")
    kl_beta: float = Field(default=0.05, ge=0, description="weight of the KL penalty to the initial (reference) "
                           "policy: in the reward for gae, as a k3 loss for grpo / rloo; 0 = no reference model")
    kl_kind: Literal["geometric", "per_token"] = Field(
        default="geometric", description="geometric: RLEF's length-normalised KL per turn; per_token: at every token")
    gamma: float = Field(default=1.0, ge=0, le=1, description="GAE discount, per turn or per token (value_level)")
    gae_lambda: float = Field(default=1.0, ge=0, le=1, description="GAE lambda (1 = Monte Carlo returns)")
    value_level: Literal["turn", "token"] = Field(
        default="turn", description="gae: the critic's value at each turn's end, one advantage per turn (RLEF), or "
        "at every token (needed for dense PRM rewards)")
    advantage: Literal["gae", "grpo", "rloo"] = Field(
        default="gae", description="gae: PPO with a critic (RLEF); grpo / rloo: critic-free, each episode's return "
        "against the other episodes of its problem in the batch (no critic is built; kl_beta weighs a k3 KL loss)")
    skip_uniform_groups: bool = Field(
        default=False, description="grpo / rloo: leave out the groups whose episodes all got the same return (their "
        "advantages are 0: no policy gradient; DAPO's dynamic sampling). Exact when kl_beta is 0")
    negative_advantage_scale: float = Field(
        default=1.0, ge=0, le=1, description="grpo / rloo: the weight of the below-average episodes' (negative) "
        "advantages; 1 = the plain estimator, 0 = learn from the better episodes only. Pushing down sampled tokens "
        "spreads probability mass (entropy rises); pushing up the better episodes sharpens the policy")
    whiten_advantages: bool = Field(default=True, description="normalise advantages to zero mean, unit variance "
                                    "over the batch (all ranks)")
    old_logprobs: Literal["behaviour", "recompute"] = Field(
        default="behaviour", description="ratio denominator: the sampler's logprobs, or the learner's before the update")
    loss_agg: Literal["token_mean", "seq_mean"] = Field(
        default="token_mean", description="how a minibatch's per-token policy and KL losses are averaged: token_mean "
        "(every action token weighs the same, so long episodes weigh more) or seq_mean (the mean over each episode's "
        "tokens, then over episodes: every episode weighs the same; verl's seq-mean-token-mean)")
    entropy_coef: float = Field(default=0.0, ge=0, description="weight of an entropy bonus in the policy loss")
    ppo_epochs: int = Field(default=1, ge=1, description="passes over an iteration's episodes")
    minibatch_size: int = Field(default=8, ge=1, description="episodes per optimizer step, over all workers")
    micro_batch_tokens: int = Field(default=2048, ge=1,
                                    description="padded tokens per forward/backward (length-bucketed micro-batches)")
    logprob_chunk_tokens: int = Field(
        default=1024, ge=0, description="action tokens per chunk of the LM head and log-softmax: only the action "
        "positions go through the head; the first chunk's logits are kept for the backward, later chunks are "
        "recomputed there, so at most two chunks of [tokens, vocab] fp32 logits exist at a time; 0 = the head on "
        "every column that predicts an action token, all logits kept")
    pad_multiple: int = Field(
        default=64, ge=1, description="micro-batch widths and the LM head's rows are padded to a multiple of this: "
        "few tensor shapes, so the CPU kernels' per-shape caches and the allocator stop growing the learner's "
        "memory batch after batch (1 = no padding)")
    padding_mask: Literal["auto", "always"] = Field(
        default="auto", description="auto: a right-padded micro-batch (as the learner pads) runs under the causal "
        "mask alone, which gives its real tokens the same outputs and runs the attention's causal kernel (bf16 "
        "flash attention on CPU: 1.4x); always: the padding mask is passed (the general path, for comparison)")
    zero_stage: Literal[0, 1, 2, 3] = Field(default=2, description="DeepSpeed ZeRO stage of the learner engines")
    world_size: int = Field(default=1, ge=1, description="data-parallel learner workers")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="float32", description="weights and activations (fp32 master weights of what trains in bf16); auto "
        "= bfloat16 where the learner's device runs it fast (a CPU with AMX, a CUDA GPU with bf16), float32 elsewhere")
    push_dtype: Literal["same", "bfloat16"] = Field(default="same", description="dtype of the weights sent to engines")
    gradient_checkpointing: bool = Field(default=False, description="recompute activations in the backward "
                                         "(less memory, more compute)")
    freeze: list[str] = Field(default_factory=list, description="parameters whose name contains one of these are "
                              "not trained (e.g. [embed_tokens, lm_head]: no optimizer state for the vocabulary matrices)")
    lora_rank: int = Field(default=0, ge=0, description="LoRA adapters of this rank on the policy (peft; 0 = full "
                           "fine-tuning). Only the adapters train; the reference is the same network with them off")
    lora_alpha: float | None = Field(default=None, gt=0, description="LoRA scale numerator (default: 2 x lora_rank)")
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout on the LoRA adapters' input")
    lora_targets: list[str] = Field(default_factory=list, description="module names that get adapters (e.g. [q_proj, "
                                    "v_proj]); empty = every linear layer of the blocks (peft's all-linear: not lm_head)")
    critic_lora_rank: int = Field(default=0, ge=0, description="LoRA adapters of this rank on the critic's backbone "
                                  "(gae; lora_alpha, lora_dropout and lora_targets as the policy's): the value head and "
                                  "the adapters train. 0 = the critic trains in full (its optimizer state is 3x the "
                                  "network in fp32: ~7.5 GB for a 0.5B model)")
    shm_comm: bool = Field(default=True, description="DeepSpeed's shared-memory allreduce on CPU (JIT-built once)")
    threads_per_worker: int | None = Field(default=None, ge=1, description="torch threads per learner worker")

    @model_validator(mode="after")
    def _negative_scale_mode(self):
        if self.negative_advantage_scale != 1.0 and self.advantage == "gae":
            raise ValueError("learner.negative_advantage_scale applies to the critic-free advantages "
                             "(learner.advantage grpo or rloo), not to gae's whitened ones")
        return self

    @model_validator(mode="after")
    def _lora_layout(self):
        if self.lora_rank and self.zero_stage == 3:
            raise ValueError("learner.lora_rank with learner.zero_stage=3: adapters are not supported under ZeRO-3 "
                             "(ZeRO-3 partitions the frozen base weights that every adapter's merge reads); use "
                             "zero_stage 0-2, LoRA's optimizer state is small anyway")
        if self.critic_lora_rank and self.zero_stage == 3:
            raise ValueError("learner.critic_lora_rank with learner.zero_stage=3: adapters are not supported under "
                             "ZeRO-3; use zero_stage 0-2")
        if self.critic_lora_rank and self.advantage != "gae":
            raise ValueError(f"learner.critic_lora_rank with learner.advantage={self.advantage}: only gae builds a critic")
        return self
