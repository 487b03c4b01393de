from pydantic import BaseModel, ConfigDict, Field


class SandboxConfig(BaseModel):
    """How untrusted code is executed (bubblewrap isolation; see sandbox_pool.bwrap).

    Time and memory limits are per problem (``time_limit_s``, ``memory_mb`` in each row)."""

    model_config = ConfigDict(extra="forbid")
    workers: int = Field(default=2, ge=1, description="concurrent sandbox runs")
    max_output_bytes: int = Field(default=1 << 20, ge=1024, description="stdout/stderr cap per run")
