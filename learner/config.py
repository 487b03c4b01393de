from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LearnerConfig(BaseModel):
    """PPO with a KL penalty to the initial policy (defaults from the RLEF paper)."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(default=2e-7, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    warmup_steps: int = Field(default=50, ge=0)
    clip_eps: float = Field(default=0.2, gt=0)
    value_clip_eps: float = Field(default=0.2, gt=0)
    kl_beta: float = Field(default=0.05, ge=0)
    gamma: float = Field(default=1.0, ge=0, le=1)
    gae_lambda: float = Field(default=1.0, ge=0, le=1)
    value_level: Literal["turn", "token"] = "turn"
    ppo_epochs: int = Field(default=1, ge=1)
    minibatch_size: int = Field(default=8, ge=1)
    zero_stage: Literal[0, 1, 2, 3] = 2
    world_size: int = Field(default=1, ge=1)
    dtype: Literal["float32", "bfloat16"] = "float32"
