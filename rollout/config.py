from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's max_lora_rank accepts


class RolloutConfig(BaseModel):
    """Multi-turn RLEF episodes and the engines that generate them (defaults from the RLEF paper)."""

    model_config = ConfigDict(extra="forbid")
    engines: int = Field(default=1, ge=1, description="vLLM engine actors")
    max_turns: int = Field(default=3, ge=1, description="attempts per episode, in training and evaluation")
    single_turn_iterations: int = Field(
        default=0, ge=0, description="the first K training iterations give one attempt per episode (no feedback: "
        "every update is on first attempts), the later ones max_turns; evaluation always uses max_turns")
    temperature: float = Field(default=1.0, ge=0, description="sampling temperature of training rollouts (0 = greedy)")
    top_p: float = Field(default=1.0, gt=0, le=1, description="nucleus sampling of training rollouts (1 = off)")
    max_new_tokens: int = Field(default=512, ge=1, description="tokens one turn's reply may take")
    max_model_len: int = Field(default=4096, ge=256, description="the engine's context: prompt, earlier turns, "
                               "feedback and the reply together")
    samples_per_problem: int = Field(default=1, ge=1, description="episodes per problem per iteration (the group "
                                     "that grpo / rloo compare)")
    feedback: Literal["text", "random", "none"] = Field(
        default="text", description="what follows a failed attempt: text = its own public-test failures (RLEF); "
        "random = another problem's failure (the ablation); none = only a request to try again")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="float32", description="the engine's weights and activations; auto = bfloat16 where the engine's "
        "device runs it fast (a CPU with AMX, a CUDA GPU with bf16), float32 elsewhere")
    compile: bool = Field(
        default=False, description="CPU: run the engine's model compiled (torch.compile through vLLM) instead of eager: "
        "1.4-1.7x the decode speed of SmolLM2 in bf16, but each engine start takes ~1 min instead of ~5 s")
    kv_cache_gib: int = Field(default=1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="CUDA: the share of its GPU's memory an engine takes for weights and KV "
        "cache (vLLM's gpu_memory_utilization); lower it when a learner worker shares the GPU")
    threads_per_engine: int | None = Field(
        default=None, ge=1, description="CPU: OpenMP threads of each engine actor (OMP_NUM_THREADS); null = Ray's "
        "default, one per whole CPU the actor reserves (at least 1): a 0.5-CPU engine decodes on a single thread")
    max_lora_rank: int = Field(
        default=0, ge=0, description="> 0: engines serve the base model plus a LoRA adapter of rank up to this "
        "(vLLM LoRARequest), and a push carries the adapter alone instead of the merged network; needs "
        "learner.lora_rank <= this. On CPU vLLM then runs eager (rollout.compile has no effect)")

    @field_validator("max_lora_rank")
    @classmethod
    def _vllm_rank(cls, v: int) -> int:
        if v and v not in LORA_RANKS:
            raise ValueError(f"rollout.max_lora_rank={v}: vLLM accepts 0 (off) or one of {', '.join(map(str, LORA_RANKS))}")
        return v
