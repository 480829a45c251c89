"""The API's rate limiter and key check, without a server."""

from __future__ import annotations

import copy
import math
from collections import deque

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from pm_streams.metrics import Metrics
from pm_streams.settings import Settings
from web.auth import Gate, RateLimiter
from web.errors import ApiError
from web.routing import FORWARDED, internal_token


class ExactLog:
    """A log of every admitted request's time: the reference the limiter is held to."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def admitted_in_window(self, now: float) -> int:
        return self.admitted_since(now - 60.0)

    def admitted_since(self, start: float) -> int:
        return sum(1 for t in self.times if t > start)


def test_admits_up_to_the_limit_then_refuses_with_the_wait() -> None:
    limiter = RateLimiter()
    assert all(limiter.check("a", 3, 100.0 + i) is None for i in range(3))
    wait = limiter.check("a", 3, 110.0)
    assert wait is not None
    # The first request (t=100.0) leaves the window at 160.0.
    assert 50.0 <= wait <= 50.1 + 1e-9
    assert limiter.check("b", 3, 110.0) is None  # per client


def test_a_refused_request_is_not_counted() -> None:
    limiter = RateLimiter()
    assert limiter.check("a", 1, 0.0) is None
    for t in range(1, 59):
        assert limiter.check("a", 1, float(t)) is not None
    assert limiter.check("a", 1, 60.2) is None


def test_memory_is_bounded_by_the_window_not_the_limit() -> None:
    limiter = RateLimiter()
    for i in range(100_000):
        assert limiter.check("a", 10**9, i * 0.001) is None  # 100 s at 1,000/s
    log = limiter._clients["a"]
    assert len(log.buckets) <= 601
    assert log.total == sum(count for _, count in log.buckets)


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=6),
    gaps=st.lists(
        # Sub-tick gaps too: several requests in one 100 ms bucket take the fast path.
        st.one_of(st.floats(min_value=0.0, max_value=25.0), st.sampled_from([0.0, 0.03, 0.09])),
        min_size=1,
        max_size=80,
    ),
)
def test_never_more_than_the_limit_in_any_60_s_window(limit: int, gaps: list[float]) -> None:
    limiter, exact = RateLimiter(), ExactLog()
    now = 1_000.0
    for gap in gaps:
        now += gap
        wait = limiter.check("c", limit, now)
        in_window = exact.admitted_in_window(now)
        if wait is None:
            assert in_window < limit  # admitted: the exact log had room
            exact.times.append(now)
        else:
            # Refused only when the limit is reached counting 100 ms more than a window.
            assert exact.admitted_since(now - 60.1 - 1e-9) >= limit
            # The wait is honest: a request just after it is admitted.
            assert wait > 0
            probe = copy.deepcopy(limiter)
            assert probe.check("c", limit, now + wait + 1e-6) is None


def _gate(**env: str) -> Gate:
    settings_ = Settings.from_env({"POSITION_MANAGER_API_KEYS": "ui:k-ui:2,risk:k-risk:5", **env})
    return Gate(settings_, Metrics())


def _request(**headers: str) -> web.Request:
    return make_mocked_request("GET", "/api/v1/portfolio", headers=headers)


def test_gate_names_unknown_and_missing_keys_401() -> None:
    gate = _gate()
    for headers in ({}, {"X-API-Key": "nope"}):
        try:
            gate.check(_request(**headers))
        except ApiError as err:
            assert err.status == 401
        else:
            raise AssertionError("no 401")
    assert gate.metrics.total("pm_api_unauthorized_total") == 2


def test_gate_limits_each_key_to_its_tier_with_retry_after() -> None:
    gate = _gate()
    for _ in range(2):
        gate.check(_request(**{"X-API-Key": "k-ui"}))
    try:
        gate.check(_request(**{"X-API-Key": "k-ui"}))
    except ApiError as err:
        assert err.status == 429
        assert 1 <= int(err.headers["Retry-After"]) <= math.ceil(60.1)
    else:
        raise AssertionError("no 429")
    gate.check(_request(**{"X-API-Key": "k-risk"}))  # another tier


def test_gate_does_not_count_a_forwarded_request_again() -> None:
    gate = _gate()
    token = internal_token(gate.settings)
    for _ in range(10):
        gate.check(_request(**{"X-API-Key": "k-ui", FORWARDED: token}))
    gate.check(_request(**{"X-API-Key": "k-ui"}))


# --------------------------------------------------------------------------- rev 2 trust


def _refused(gate: Gate, **headers: str) -> ApiError:
    try:
        gate.check(_request(**headers))
    except ApiError as err:
        return err
    raise AssertionError("admitted")


def test_the_internal_token_cannot_be_derived_from_the_api_keys() -> None:
    """The old token was an HMAC of the keys and the app id: any client holding every
    key (or the only one) could forge it. Now it needs the internal secret."""
    import hashlib
    import hmac

    gate = _gate()
    keys = "\x00".join(sorted(c.key for c in gate.settings.api_clients)).encode()
    old_style = hmac.new(keys, gate.settings.app_id.encode(), hashlib.sha256).hexdigest()
    for forged in (old_style, "x", internal_token(Settings(internal_secret="guess"))):
        err = _refused(gate, **{"X-API-Key": "k-ui", FORWARDED: forged})
        assert (err.status, err.code) == (403, "forbidden")
    assert gate.metrics.total("pm_forged_internal_total") == 3
    # and a forged header never skips the rate limit: k-ui's 2/min are still there
    for _ in range(2):
        gate.check(_request(**{"X-API-Key": "k-ui"}))
    assert _refused(gate, **{"X-API-Key": "k-ui"}).status == 429


def test_without_an_internal_secret_a_worker_forwards_nothing_and_says_why() -> None:
    from types import SimpleNamespace

    from web.routing import NO_SECRET, Router

    router = Router(SimpleNamespace(), Settings())
    try:
        router._headers(_request(**{"X-API-Key": "k-ui"}))
    except ApiError as err:
        assert (err.status, err.code, str(err)) == (503, "misconfigured", NO_SECRET)
    else:
        raise AssertionError("forwarded without a secret")
    shared = Router(SimpleNamespace(), Settings(internal_secret="s" * 32))
    headers = shared._headers(_request(**{"X-API-Key": "k-ui"}))
    assert headers[FORWARDED] == internal_token(Settings(internal_secret="s" * 32))


def test_requests_without_a_valid_key_are_limited_per_address() -> None:
    from web.auth import UNAUTHORIZED_PER_MIN

    gate = _gate()
    statuses = [_refused(gate, **{"X-API-Key": f"guess-{i}"}).status for i in range(40)]
    assert statuses == [401] * UNAUTHORIZED_PER_MIN + [429] * (40 - UNAUTHORIZED_PER_MIN)
    assert gate.metrics.total("pm_api_unauthorized_total") == 40
    gate.check(_request(**{"X-API-Key": "k-risk"}))  # a valid key is unaffected
