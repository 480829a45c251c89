"""Every externally visible name: Kafka topics, tables, consumer groups, queues.

Names are schema. Changing one orphans the data stored under the old name (a
changelog, a committed offset, a queue), so a rename is a migration, not a refactor.
Every Kafka name is namespaced by the app id so that two deployments or two test
runs never share state.
"""

from __future__ import annotations

from dataclasses import dataclass

POSITIONS_TABLE = "positions"
FILL_IDS_TABLE = "fill-ids"
PORTFOLIO_CONTRIB_TABLE = "portfolio-contrib"
PORTFOLIO_TOTALS_TABLE = "portfolio-totals"
TOTALS_KEY = "portfolio"
"""The one key of the totals table; portfolio requests are routed with it."""
PORTFOLIO_HISTORY_TABLE = "portfolio-history"

POSITION_EVENTS = "position_updated", "position_closed"
OUTPUT_EVENT_TYPES = (
    "position_updated",
    "position_closed",
    "portfolio_updated",
    "position_snapshot_created",
    "portfolio_limit_exceeded",
)


@dataclass(frozen=True, slots=True)
class KafkaNames:
    """Kafka topic and group names for one app id."""

    app_id: str

    @property
    def input_topic(self) -> str:
        """Canonical, validated input events keyed by asset."""
        return f"{self.app_id}.position-events"

    @property
    def portfolio_topic(self) -> str:
        """Per-asset contributions to the portfolio (one partition: one owner)."""
        return f"{self.app_id}.portfolio-changes"

    @property
    def outbox_topic(self) -> str:
        """Events that are not position changes (portfolio, snapshots) to republish."""
        return f"{self.app_id}.outbox"

    def changelog(self, table: str) -> str:
        """Faust's own naming of a table's changelog topic."""
        return f"{self.app_id}-{table}-changelog"

    @property
    def positions_changelog(self) -> str:
        return self.changelog(POSITIONS_TABLE)

    @property
    def fill_ids_changelog(self) -> str:
        return self.changelog(FILL_IDS_TABLE)

    @property
    def sink_group(self) -> str:
        return f"{self.app_id}.sink"

    @property
    def republisher_group(self) -> str:
        return f"{self.app_id}.republisher"


@dataclass(frozen=True, slots=True)
class QueueNames:
    """RabbitMQ queues: the two inputs (with their dead-letter queues) and the outputs."""

    position_updates: str = "ws-gateway.position"
    order_executed: str = "order-manager.order_executed"
    output_prefix: str = "position-manager"

    @staticmethod
    def dlq(queue: str) -> str:
        return f"{queue}.dlq"

    def output(self, event_type: str) -> str:
        return f"{self.output_prefix}.{event_type}"

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.output(t) for t in OUTPUT_EVENT_TYPES)
