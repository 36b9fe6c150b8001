"""Every example plan is byte-identical to the committed manifest (tests/plan_manifest.py says how to rewrite it)."""

from __future__ import annotations

import json

import pytest

from plan_manifest import MANIFEST, cases, key, plan_digest

EXPECTED = json.loads(MANIFEST.read_text())


def test_manifest_lists_every_case():
    assert sorted(EXPECTED) == sorted(key(c) for c in cases())


@pytest.mark.parametrize("case", cases(), ids=key)
def test_plan_bytes_unchanged(case):
    assert plan_digest(case) == EXPECTED[key(case)], (
        f"{key(case)}: the plan's bytes changed; if on purpose, rewrite the manifest "
        "(.venv/bin/python tests/plan_manifest.py --write) and say why in the commit")
