"""`GET /v1/whoami`: the caller's role, so a client (the dashboard) shows only what it may do."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.api.alerts import masked_for
from services.api.deps import ViewerPrincipal
from services.api.schemas import ErrorBody

router = APIRouter(prefix="/v1", tags=["alerts"])


class WhoAmIOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    role: Literal["viewer", "operator", "admin"]
    masked: bool = Field(description="Names and phone numbers are masked for this caller.")


@router.get(
    "/whoami",
    summary="The caller's role",
    response_model=WhoAmIOut,
    responses={
        401: {"model": ErrorBody, "description": "No credential or an unknown one."},
        403: {"model": ErrorBody, "description": "Vendor ingest keys have no role here."},
    },
)
async def whoami(who: ViewerPrincipal) -> WhoAmIOut:
    """The role behind the token (user tokens only): `viewer` reads with names and phone numbers
    masked, `operator` also acts on alerts, `admin` everything."""
    return WhoAmIOut.model_validate({"role": who.name, "masked": masked_for(who)})
