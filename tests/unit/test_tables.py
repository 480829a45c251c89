"""`runtime.tables.Table`: a changelog whose partition count the consumer's metadata does
not know yet (0) is checked again on the next event, not taken for a mismatch; a real
mismatch still raises, and a verified source is not checked again."""

from __future__ import annotations

from typing import Any

import pytest
from faust.exceptions import PartitionsMismatch

from pm_streams.app import faust_app
from pm_streams.runtime.tables import Table
from pm_streams.settings import Settings


def _table(monkeypatch: pytest.MonkeyPatch, counts: dict[str, int | None]) -> Any:
    app = faust_app(Settings(app_id="pmtest-tables"))
    table = app.Table("history", partitions=1)
    assert type(table) is Table
    monkeypatch.setattr(app.consumer, "topic_partitions", lambda topic: counts.get(topic))
    return table


def test_a_changelog_not_listed_yet_is_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: dict[str, int | None] = {"source": 1}
    table = _table(monkeypatch, counts)
    counts[table.changelog_topic_name] = 0  # listed, partitions not known yet
    table._verify_source_topic_partitions("source")  # Faust's own raises here
    assert "source" not in table._verified_source_topics_for_partitions
    counts[table.changelog_topic_name] = 1
    table._verify_source_topic_partitions("source")
    assert "source" in table._verified_source_topics_for_partitions
    counts[table.changelog_topic_name] = 3
    table._verify_source_topic_partitions("source")  # verified once: not again


def test_a_real_mismatch_still_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: dict[str, int | None] = {"source": 1}
    table = _table(monkeypatch, counts)
    counts[table.changelog_topic_name] = 4
    with pytest.raises(PartitionsMismatch):
        table._verify_source_topic_partitions("source")
