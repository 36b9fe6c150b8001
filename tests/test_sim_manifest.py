"""Every load-simulator output in the manifest is byte-identical (tests/sim_manifest.py says how to rewrite it)."""

from __future__ import annotations

import json

import pytest

from sim_manifest import CASES, MANIFEST, digest

EXPECTED = json.loads(MANIFEST.read_text())


def test_manifest_lists_every_case():
    assert sorted(EXPECTED) == sorted(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_simulator_output_unchanged(name):
    assert digest(name) == EXPECTED[name], (
        f"{name}: the simulator's output changed; if on purpose, rewrite the manifest "
        "(.venv/bin/python tests/sim_manifest.py --write) and say why in the commit")
