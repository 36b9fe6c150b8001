"""Test-wide settings: property tests have no per-example deadline (speed is measured in
benchmarks/, never asserted in tests, and CI machines vary)."""

from hypothesis import settings

settings.register_profile("gimletc", deadline=None)
settings.load_profile("gimletc")
