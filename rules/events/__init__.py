"""Event models of DESIGN §4: frozen pydantic models, unknown fields rejected, aware timestamps."""

from rules.events.alert import AlertEvent, AlertStatus, Location, Severity
from rules.events.common import (
    SCHEMA_VERSION,
    describe_validation_error,
    error_items,
    field_path,
)
from rules.events.contact import Channel, ContactAttempt, Outcome, Party
from rules.events.gps import Alarm, DeviceKind, Fix, GpsPing
from rules.events.loan import (
    Borrower,
    CircleRegion,
    DeviceBinding,
    Installment,
    Loan,
    LoanStatus,
    MultiPolygonRegion,
    PolygonRegion,
    Vehicle,
)
from rules.events.payment import PaymentEvent, PaymentType
from rules.events.recording import (
    EVENT_TYPE_BY_TOPIC,
    InputEvent,
    Label,
    RecordingError,
    decode_event,
    read_recording,
    recording_line,
)

__all__ = [
    "EVENT_TYPE_BY_TOPIC",
    "SCHEMA_VERSION",
    "Alarm",
    "AlertEvent",
    "AlertStatus",
    "Borrower",
    "Channel",
    "CircleRegion",
    "ContactAttempt",
    "DeviceBinding",
    "DeviceKind",
    "Fix",
    "GpsPing",
    "InputEvent",
    "Installment",
    "Label",
    "Loan",
    "LoanStatus",
    "Location",
    "MultiPolygonRegion",
    "Outcome",
    "Party",
    "PaymentEvent",
    "PaymentType",
    "PolygonRegion",
    "RecordingError",
    "Severity",
    "Vehicle",
    "decode_event",
    "describe_validation_error",
    "error_items",
    "field_path",
    "read_recording",
    "recording_line",
]
