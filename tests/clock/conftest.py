"""Clock tests: fast Hypothesis settings shared by the property tests."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "clock",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
