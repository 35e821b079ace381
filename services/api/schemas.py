"""Response bodies of the ingest API (the wire format; kept apart from the event models)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the failing field inside the item, e.g. `lat`.")
    message: str
    type: str = Field(description="Machine-readable error type, e.g. `less_than_equal`.")


class RejectedItem(BaseModel):
    index: int = Field(description="Position of the item in the posted array (0-based).")
    event_id: str | None = Field(description="The item's event_id, when it had a readable one.")
    reason: str = Field(description="`invalid_event`, `vendor_mismatch` or `loan_id_mismatch`.")
    errors: list[FieldError]


class IngestResult(BaseModel):
    """Answered with 200 once every accepted item and every dead letter is acknowledged by Kafka."""

    accepted: int = Field(description="Items written to Kafka in this request.")
    duplicates: int = Field(
        description="Items skipped because their event_id was already written (a retry)."
    )
    rejected: list[RejectedItem] = Field(
        description="Items that failed validation; each is also in the dead-letter topic."
    )
    ignored: int = Field(
        0, description="Traccar only: forwarded messages with nothing to ingest (see docs)."
    )


class LoanWriteResult(BaseModel):
    loan_id: str
    accepted: int = Field(1, description="Always 1: the loan is in Kafka.")


class ErrorBody(BaseModel):
    """Every 4xx/5xx body."""

    error: str = Field(
        description="Stable code: `unauthenticated`, `forbidden`, `unavailable`, ..."
    )
    message: str
    field: str | None = Field(description="The header, parameter or body field at fault.")
    errors: list[FieldError] = Field(default_factory=list)
