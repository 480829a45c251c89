"""Which worker owns a key of a Faust table, or a partition: the one place that asks.

Upstream: faust-streaming keeps the partition -> worker URL map in its assignor's
private `_tps_url` and the actively owned partitions in `_active_tps`; `Router.key_store`
raises while no assignment is known.
Delete when: faust offers a public ownership lookup that says "unknown" instead of
raising.
"""

from __future__ import annotations

from typing import Any

from faust.types import TP
from yarl import URL


def reassigning(app: Any) -> bool:
    """Partitions are being reassigned or recovered: no ownership answer holds."""
    return bool(app.rebalancing or app.in_recovery)


def ident(url: URL | str) -> tuple[str | None, int | None]:
    """(host, port): how two workers' URLs are compared."""
    u = URL(str(url))
    return u.host, u.port


def owner_url(app: Any, table: str, key: str) -> URL:
    """The URL of the worker that owns `key` of `table`; raises while none is known."""
    return URL(app.router.key_store(table, key))


def owns(app: Any, table: str, key: str) -> bool:
    """Whether this worker actively owns `key` of `table` right now."""
    if reassigning(app):
        return False
    try:
        dest = owner_url(app, table, key)
    except Exception:  # no assignment yet, or the producer is stopping (NotReady)
        return False
    return ident(dest) == ident(app.conf.canonical_url)


def owns_partition(app: Any, topic: str, partition: int) -> bool:
    """Whether this worker actively owns a partition of a (changelog) topic."""
    try:
        return bool(app.assignor.is_active(TP(topic, partition)))
    except (AttributeError, KeyError):
        return False


def assignment(app: Any) -> object:
    """The current partition -> URL map, an object Faust replaces on every rebalance."""
    return getattr(app.assignor, "_tps_url", None)


def hosts(app: Any, topic: str) -> set[str]:
    """The URLs of the workers that own a partition of `topic`."""
    tps_url: dict[Any, str] = getattr(app.assignor, "_tps_url", {})
    return {str(url) for tp, url in tps_url.items() if tp.topic == topic}


def active_count(app: Any, topic: str) -> int:
    """How many partitions of `topic` this worker actively owns."""
    actives: set[Any] = getattr(app.assignor, "_active_tps", set())
    return sum(1 for tp in actives if tp.topic == topic)
