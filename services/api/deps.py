"""FastAPI dependencies as `Annotated` aliases: settings, the app context and who is calling.

A route states what it needs in its signature:

    async def ack_alert(alert_id: str, who: OperatorPrincipal, settings: SettingsDep) -> ...

and a whole router can demand a role: `APIRouter(dependencies=[Depends(require(Role.VIEWER))])`.
Every `/v1` route must use one of the principal aliases (or `require`): none is anonymous.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from services.api.auth import Authenticator, Principal, Role, require_gps_ingest, require_role
from services.api.dedup import DedupStore
from services.api.metrics import ApiMetrics
from services.api.pipeline import IngestPipeline
from services.api.publisher import Publisher
from services.settings import Settings


@dataclass(frozen=True)
class ApiContext:
    """Everything a request handler may use; built once per app in the lifespan."""

    settings: Settings
    metrics: ApiMetrics
    authenticator: Authenticator
    publisher: Publisher
    dedup: DedupStore
    pipeline: IngestPipeline


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.skipwatch
    return context


def get_app_settings(request: Request) -> Settings:
    # The app's own settings (what create_app was given), not necessarily get_settings().
    return get_context(request).settings


ContextDep = Annotated[ApiContext, Depends(get_context)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]

# auto_error=False: a missing credential is our 401 with our error body, not FastAPI's 403.
_bearer = HTTPBearer(
    auto_error=False,
    description="User token (role viewer, operator or admin) or a vendor ingest key.",
)
_api_key = APIKeyHeader(
    name="X-Api-Key", auto_error=False, description="Vendor ingest key (GPS ingest routes only)."
)


async def current_principal(
    context: ContextDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    return context.authenticator.authenticate(bearer.credentials if bearer else None, api_key)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(minimum: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting user tokens with at least `minimum` (vendor keys get 403)."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        require_role(principal, minimum)
        return principal

    return dependency


async def _gps_ingest_principal(principal: CurrentPrincipal) -> Principal:
    require_gps_ingest(principal)
    return principal


ViewerPrincipal = Annotated[Principal, Depends(require(Role.VIEWER))]
OperatorPrincipal = Annotated[Principal, Depends(require(Role.OPERATOR))]
AdminPrincipal = Annotated[Principal, Depends(require(Role.ADMIN))]
# A vendor ingest key, or a user token of at least operator (loan system, call centre).
GpsIngestPrincipal = Annotated[Principal, Depends(_gps_ingest_principal)]
