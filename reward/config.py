from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RewardConfig(BaseModel):
    """Outcome reward (RLEF) and the optional dense line-level PRM reward (PSGPO)."""

    model_config = ConfigDict(extra="forbid")
    success: float = Field(default=1.0, description="the episode's reward when its final attempt passes the "
                           "private tests")
    failure: float = Field(default=-1.0, description="the episode's reward when it fails them")
    invalid_turn: float = Field(default=-0.2, description="added for a turn whose reply has no valid code")
    turn_cost: float = Field(default=0.0, le=0, description="added for every turn that another attempt follows (a retry "
                             "costs this much); 0 = RLEF, where only the final verdict counts and a first-attempt "
                             "solve is worth no more than a recovered one")
    repeat_cost: float = Field(default=0.0, le=0, description="added for a turn whose code an earlier turn of the "
                               "episode already ran (the feedback said it failed): resubmitting it unchanged is "
                               "no attempt at all; 0 = RLEF")
    repeat_scope: Literal["resubmitted", "no_new_function"] = Field(
        default="resubmitted", description="which retries pay repeat_cost: 'resubmitted' = code an earlier turn ran, "
        "character for character; 'no_new_function' = also code that equals an earlier turn's once comments and "
        "layout are ignored, a retry without valid code and one that does not define the problem's function (a "
        "policy dodged the plain rule by copying the failing assertion back or writing no code)")
    prm: bool = Field(default=False, description="add the PRM's dense line rewards (needs prm_model)")
    prm_model: str | None = Field(default=None, description="a PRM directory written by `proctor prm train`")
    prm_weight_correct: float = Field(default=0.1, ge=0, description="lambda+: dense weight when the final code passes")
    prm_weight_incorrect: float = Field(default=0.1, ge=0, description="lambda-: dense weight when it fails")
    prm_critic_init: bool = Field(default=False, description="start the critic from the PRM (backbone and head)")
    prm_cpus: float = Field(default=0.25, ge=0, description="Ray CPUs reserved for the PRM scoring actor")
    prm_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="float32", description="the scoring actor's weights and activations; auto = bfloat16 where its device "
        "runs it fast (a CPU with AMX: a 0.5B PRM scores a batch ~4x faster than in float32), float32 elsewhere")

    @model_validator(mode="after")
    def _prm_needs_a_model(self):
        if (self.prm or self.prm_critic_init) and not self.prm_model:
            raise ValueError("reward.prm / reward.prm_critic_init need reward.prm_model (a `proctor prm train` output dir)")
        return self


class PRMLabelConfig(BaseModel):
    """``proctor prm label``: sample responses, binary-search their line prefixes."""

    model_config = ConfigDict(extra="forbid")
    checkpoints: list[str] = Field(default_factory=list, description="policies to sample from (default: model.name)")
    responses_per_problem: int = Field(default=2, ge=1, description="responses sampled per problem, each labelled")
    k: int = Field(default=4, ge=1, description="completions per prefix; a prefix is good if any passes")
    temperature: float = Field(default=1.0, ge=0, description="sampling temperature of responses and completions")
    max_new_tokens: int = Field(default=256, ge=1, description="tokens per response or prefix completion")
    problems: int | None = Field(default=None, ge=1, description="label only N problems of data.train")
    skip: int = Field(default=0, ge=0, description="skip the first N problems (e.g. an eval slice of the same set)")
    tests: Literal["all", "private", "public"] = Field(default="all", description="tests a completion must pass")
    revised_only: bool = Field(default=False, description="keep only failed responses with a fixable prefix")
    out: str = Field(default="runs/prm/labels.jsonl", description="the labels file written (JSONL, one response a row)")


class PRMTrainConfig(BaseModel):
    """``proctor prm train``: the LM with a scalar head read at each code line's last token."""

    model_config = ConfigDict(extra="forbid")
    labels: str = Field(default="runs/prm/labels.jsonl", description="the labels `proctor prm label` wrote")
    base_model: str | None = Field(default=None, description="backbone to start from (default: model.name)")
    loss: Literal["mse", "bce"] = Field(default="mse", description="mse: regress the +-1 label; bce: P(good)")
    lr: float = Field(default=2e-5, gt=0, description="PRM learning rate")
    epochs: int = Field(default=2, ge=1, description="passes over the training labels")
    batch_size: int = Field(default=4, ge=1, description="responses per optimizer step")
    zero_stage: int = Field(default=0, ge=0, le=2, description="ZeRO stage of the PRM engine (0-2)")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="float32", description="weights and activations (bf16: fp32 master weights in the optimizer); auto = "
        "bf16 where the CPU has AMX, as learner.dtype")
    lora_rank: int = Field(default=0, ge=0, description="LoRA adapters of this rank on the backbone (the head trains "
                           "in full); 0 = full fine-tuning. Saved merged: the PRM dir is a plain HF dir either way")
    lora_alpha: float | None = Field(default=None, gt=0, description="LoRA scale numerator (default: 2 x lora_rank)")
    heldout_frac: float = Field(default=0.2, ge=0, lt=1, description="share of problems held out (split by problem)")
    threads: int = Field(default=2, ge=1, description="CPU threads of the PRM trainer (torch.set_num_threads)")
    out: str = Field(default="runs/prm/model", description="the PRM directory written (a HF model dir + value head)")


class PRMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: PRMLabelConfig = PRMLabelConfig()
    train: PRMTrainConfig = PRMTrainConfig()
