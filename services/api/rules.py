"""`GET /v1/rules`: the rule catalog the workers evaluate, with titles and descriptions in English
and Chinese (the rule files carry both; docs/rules.md), for the dashboard and integrators.

Read from the same directory the worker loads (`worker.rules_dir`, default the shipped
rules/catalog/), once per process: a rule change is a deploy, as it is for the workers."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel, Field

from rules.events import Severity
from rules.spec import CATALOG_DIR, load_rules
from services.api.deps import SettingsDep, ViewerPrincipal
from services.api.schemas import ErrorBody

router = APIRouter(prefix="/v1", tags=["rules"])


class RuleOut(BaseModel):
    id: str
    severity: Severity
    title: str = Field(description="English title (the alert's `title`).")
    description: str
    title_zh: str | None = Field(description="Chinese (zh-CN) title; null if the file has none.")
    description_zh: str | None
    labels: dict[str, str]
    escalates_to: list[Severity] = Field(description="Severities its escalations raise it to.")


@cache
def _catalog(directory: Path) -> tuple[RuleOut, ...]:
    return tuple(
        RuleOut(
            id=rule.id,
            severity=rule.severity,
            title=rule.title,
            description=rule.description,
            title_zh=rule.title_zh,
            description_zh=rule.description_zh,
            labels=dict(rule.labels),
            escalates_to=[severity for _, severity in rule.escalations],
        )
        for rule in load_rules(directory).rules
    )


@router.get(
    "/rules",
    summary="The rule catalog: id, severity, title and description in English and Chinese",
    response_model=list[RuleOut],
    responses={
        401: {"model": ErrorBody, "description": "No credential or an unknown one."},
        403: {"model": ErrorBody, "description": "Vendor ingest keys may not read rules."},
    },
)
async def list_rules(who: ViewerPrincipal, settings: SettingsDep) -> list[RuleOut]:
    """Every rule the workers load, in catalog order."""
    return list(_catalog(settings.worker.rules_dir or CATALOG_DIR))
