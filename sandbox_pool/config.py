from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SandboxConfig(BaseModel):
    """How untrusted code is executed (see sandbox_pool.runner for the backends).

    Time and memory limits are per problem (``time_limit_s``, ``memory_mb`` in each row)."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["auto", "forkserver", "bwrap", "unsafe_local"] = Field(
        default="auto", description="auto: forkserver as root, else bwrap per run")
    slots: int = Field(default=2, ge=1, le=64, description="concurrent runs per fork server")
    actors: int = Field(default=1, ge=1, description="SandboxActors in the Ray pool")
    max_output_bytes: int = Field(default=1 << 20, ge=1024, description="stdout/stderr cap per run")
