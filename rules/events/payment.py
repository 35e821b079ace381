"""PaymentEvent: what the loan system reports about instalments."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from rules.events.bounds import Amount, InstallmentNo
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
    installment_no: InstallmentNo
    amount: Amount
    currency: Currency = "CNY"
    due_date: dt.date | None = None
