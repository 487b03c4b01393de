from pydantic import BaseModel, ConfigDict, Field


class RewardConfig(BaseModel):
    """Outcome reward (RLEF) and the optional dense line-level PRM reward (PSGPO)."""

    model_config = ConfigDict(extra="forbid")
    success: float = 1.0
    failure: float = -1.0
    invalid_turn: float = Field(default=-0.2, description="added for a turn whose reply has no valid code")
    prm: bool = False
    prm_model: str | None = None
    prm_weight_correct: float = Field(default=0.1, ge=0, description="lambda for dense reward on correct code")
    prm_weight_incorrect: float = Field(default=0.1, ge=0, description="lambda for dense reward on incorrect code")
    prm_label_samples: int = Field(default=4, ge=1, description="K completions per prefix in label search")
