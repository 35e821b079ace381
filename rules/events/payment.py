"""PaymentEvent: what the loan system reports about instalments."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from rules.events.common import Event, Identifier, Timestamp


class PaymentType(StrEnum):
    INSTALLMENT_DUE = "installment_due"
    PAYMENT_RECEIVED = "payment_received"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_REVERSED = "payment_reversed"


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class PaymentEvent(Event):
    event_id: Identifier
    loan_id: Identifier
    ts: Timestamp
    type: PaymentType
    installment_no: Annotated[int, Field(ge=1, le=1000)]
    amount: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    currency: Currency = "CNY"
    due_date: dt.date | None = None
