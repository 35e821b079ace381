"""`GET /v1/rules`: the catalog with English and Chinese titles and descriptions, viewer and up."""

from __future__ import annotations

import pytest

from rules.spec import load_rules
from tests.unit.api.support import VENDOR_KEY, VIEWER, Api, bearer

pytestmark = pytest.mark.unit


async def test_rules_list_both_languages_as_the_files_do(api: Api) -> None:
    response = await api.client.get("/v1/rules", headers=bearer(VIEWER))
    assert response.status_code == 200
    listed = {r["id"]: r for r in response.json()}
    catalog = load_rules().rules
    assert list(listed) == [rule.id for rule in catalog]
    for rule in catalog:
        row = listed[rule.id]
        assert row["severity"] == rule.severity.value
        assert (row["title"], row["description"]) == (rule.title, rule.description)
        assert (row["title_zh"], row["description_zh"]) == (rule.title_zh, rule.description_zh)
        assert row["title_zh"] and row["description_zh"]
        assert row["escalates_to"] == [s.value for _, s in rule.escalations]
    assert listed["first-missed-all-contacts-failing"]["title_zh"] == "首期逾期且所有联系人均无应答"
    assert listed["long-dwell-second-pledge-lot"]["escalates_to"] == ["critical"]


async def test_rules_need_a_reader(api: Api) -> None:
    assert (await api.client.get("/v1/rules")).status_code == 401
    assert (await api.client.get("/v1/rules", headers=bearer(VENDOR_KEY))).status_code == 403
