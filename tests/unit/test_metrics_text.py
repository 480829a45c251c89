"""/metrics as Prometheus scrapers and operators expect it."""

from __future__ import annotations

from pm_streams import version
from pm_streams.metrics import Metrics


def test_every_series_has_help_and_the_build_info_is_there() -> None:
    metrics = Metrics.of_service()
    metrics.inc("pm_rejects_total", queue="q", reason="bad")
    metrics.observe("pm_apply_seconds", 0.002)
    text = metrics.render()
    assert f'pm_build_info{{version="{version()}"}} 1' in text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    helps = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    assert names == helps == {"pm_build_info", "pm_rejects_total", "pm_apply_seconds"}
    assert "# HELP pm_rejects_total Input messages dead-lettered, by queue and reason" in text
