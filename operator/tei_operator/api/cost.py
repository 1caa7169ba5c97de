"""`status.cost`: what the service's GPUs cost and what a million tokens cost at the rate it serves them.

The price of a GPU-hour per GPU type is an operator setting (TEI_OPERATOR_GPU_PRICES, the chart's `gpuPrices`);
the token rate is measured from TEI's own counter of tokens per input (`te_request_input_length_sum`, summed over
the Ready pods). docs/cost.md compares the figures with managed embedding APIs.
"""

from __future__ import annotations

from pydantic import Field

from .base import StatusModel


class CostStatus(StatusModel):
    """The fleet's cost per hour and per million tokens served."""

    gpu_type: str = Field(..., max_length=32, description="spec.gpu.type, or default when unset.")
    dollars_per_gpu_hour: float = Field(..., ge=0, description="Price of one GPU-hour (operator setting).")
    gpus: int = Field(..., ge=0, description="GPUs the service's pods hold now: replicas x spec.gpu.count.")
    dollars_per_hour: float = Field(..., ge=0, description="gpus x dollarsPerGpuHour.")
    tokens_per_second: float | None = Field(
        None, ge=0, description="Tokens the Ready pods processed per second over the last sampling interval "
        "(rate of te_request_input_length_sum). Unset until two samples exist.",
    )
    dollars_per_million_tokens: float | None = Field(
        None, ge=0, description="dollarsPerHour / (tokensPerSecond x 3600) x 1,000,000. Unset while no tokens flow.",
    )
