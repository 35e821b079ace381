"""Masking of personal data for viewers (services/api/views.py)."""

from __future__ import annotations

import pytest

from services.api.views import mask_free_text, mask_name, mask_phone, mask_text, mask_value

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "masked"),
    [("张三", "张*"), ("欧阳娜娜", "欧***"), ("John Smith", "J*** *****"), ("王", "王"), ("", "")],
)
def test_mask_name(name: str, masked: str) -> None:
    assert mask_name(name) == masked


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("+8613800138000", "+86138****8000"),
        ("13800138000", "138****8000"),
        ("+86 138-0013-8000", "+86138****8000"),
        ("+14155550123", "+141****0123"),
        ("12345", "***45"),
    ],
)
def test_mask_phone(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


def test_mask_text_finds_phones_but_not_longer_numbers() -> None:
    assert mask_text("call 13800138000 now") == "call 138****8000 now"
    assert mask_text("拨打+8613800138000失败") == "拨打+86138****8000失败"
    assert mask_text("amount 1380013800012 CNY") == "amount 1380013800012 CNY"


def test_mask_value_walks_nested_structures() -> None:
    value = {
        "kind": "contact",
        "party": {"name": "李四", "phone": "13912345678"},
        "borrower_name": "张三",
        "guarantor_phone": "+8613700000000",
        "name": "contact.consecutive_failures",
        "event_id": "13800138000",
        "notes": ["called 13800138000"],
        "count": 3,
    }
    assert mask_value(value) == {
        "kind": "contact",
        "party": {"name": "李*", "phone": "139****5678"},
        "borrower_name": "张*",
        "guarantor_phone": "+86137****0000",
        "name": "contact.consecutive_failures",
        "event_id": "13800138000",
        "notes": ["called 138****8000"],
        "count": 3,
    }


def test_assignee_free_text_is_masked_wherever_it_appears() -> None:
    assert (
        mask_free_text("call 138 0013 8000 or 010-6552-9988") == "call 138****8000 or 010****9988"
    )
    assert mask_free_text("collector-07, room 1204") == "collector-07, room 1204"
    assert mask_value({"kind": "action", "assignee": "+86 138-0013-8000"}) == {
        "kind": "action",
        "assignee": "+86138****8000",
    }
