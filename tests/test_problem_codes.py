"""Every code a problem body can carry has a title (an unknown code must never
turn a 400 into a 500), and the API description lists exactly those codes."""

from __future__ import annotations

import hashcore
from service.api.openapi import SPEC
from service.api.problems import TITLES


def test_every_code_hashcore_can_raise_has_a_title() -> None:
    assert hashcore.BATCH_ERROR_CODES
    missing = [code for code in hashcore.BATCH_ERROR_CODES if code not in TITLES]
    assert missing == []


def test_the_api_description_lists_every_code() -> None:
    codes = SPEC["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
    assert sorted(codes) == sorted(TITLES)
