"""Notifications: alerts pushed to the people and systems that act on them (DESIGN §7).

Pure parts (no sockets, no clock): `matchers`, `timeintervals`, `routing`, `retry`, `messages`,
`signing`, `sealing` (secrets at rest). Adapters: `ssrf` (the destination guard and the HTTP
transport that enforces it), `receivers` (Standard Webhooks, WeCom and DingTalk robots) and
`config` (file loading, reload).
"""
