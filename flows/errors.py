"""Errors a run ends with, as one line each: what the command line prints and exits on."""

from __future__ import annotations


class RunFailed(RuntimeError):
    """A run stopped in `stage` for `reason` (one line, masked); what its stages committed before
    stays committed (each landed batch with its cursor), and the next run carries on from there."""

    def __init__(self, run_id: str, stage: str, reason: str) -> None:
        super().__init__(
            f"run {run_id} failed in {stage}: {reason}; what was landed before stays landed, "
            "the next run carries on from there"
        )
        self.run_id = run_id
        self.stage = stage
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:  # Prefect may carry it across a process boundary
        return (type(self), (self.run_id, self.stage, self.reason))
