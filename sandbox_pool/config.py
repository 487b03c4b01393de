from pydantic import BaseModel, ConfigDict, Field


class SandboxConfig(BaseModel):
    """How untrusted code is executed (bubblewrap isolation; see sandbox_pool.bwrap)."""

    model_config = ConfigDict(extra="forbid")
    workers: int = Field(default=2, ge=1, description="concurrent sandbox runs")
    default_time_limit_s: float = Field(default=10.0, gt=0, description="per test, when a problem sets none")
    default_memory_mb: int = Field(default=1024, ge=16)
    max_output_bytes: int = Field(default=1 << 20, ge=1024)
