"""Settings read from the environment: the producer linger reaches Faust's producer, the
Postgres sslmode the DSN."""

from __future__ import annotations

from pathlib import Path

import pytest

from pm_streams.app import faust_app
from pm_streams.settings import Settings, SettingsError


def test_producer_linger_defaults_to_5_ms_and_reaches_the_faust_app() -> None:
    settings = Settings.from_env({"POSITION_MANAGER_APP_ID": "pmtest-settings"})
    assert settings.producer_linger == 0.005
    assert faust_app(settings).conf.producer_linger == 0.005


def test_producer_linger_may_be_zero() -> None:
    settings = Settings.from_env(
        {"POSITION_MANAGER_APP_ID": "pmtest-settings", "POSITION_MANAGER_PRODUCER_LINGER": "0"}
    )
    assert settings.producer_linger == 0.0
    assert faust_app(settings).conf.producer_linger == 0.0


@pytest.mark.parametrize("raw", ["-0.001", "soon", "nan"])
def test_a_bad_producer_linger_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"POSITION_MANAGER_PRODUCER_LINGER": raw})
    assert caught.value.variable == "POSITION_MANAGER_PRODUCER_LINGER"


def test_the_event_loop_is_uvloop_unless_asyncio_is_asked_for() -> None:
    import uvloop

    from pm_streams.cli import new_event_loop

    for env, kind in (({}, uvloop.Loop), ({"POSITION_MANAGER_EVENT_LOOP": "asyncio"}, None)):
        loop = new_event_loop(Settings.from_env(env).event_loop)
        try:
            if kind is None:
                assert type(loop).__module__.startswith("asyncio")
            else:
                assert isinstance(loop, kind)
        finally:
            loop.close()
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"POSITION_MANAGER_EVENT_LOOP": "trio"})
    assert caught.value.variable == "POSITION_MANAGER_EVENT_LOOP"


def test_postgres_sslmode_defaults_to_prefer_and_reaches_the_dsn() -> None:
    assert Settings.from_env({}).postgres_dsn.endswith("?sslmode=prefer")
    settings = Settings.from_env({"POSTGRES_SSLMODE": "verify-full"})
    assert settings.postgres_dsn.endswith("@127.0.0.1:5432/position_manager?sslmode=verify-full")


def test_a_bad_postgres_sslmode_names_the_variable() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"POSTGRES_SSLMODE": "on"})
    assert caught.value.variable == "POSTGRES_SSLMODE"


def test_a_relative_data_dir_is_resolved_once_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    default = Settings.from_env({})
    assert default.data_dir == tmp_path / "var/worker"
    given = Settings.from_env({"POSITION_MANAGER_DATA_DIR": "state/pm"})
    assert given.data_dir == tmp_path / "state/pm"
    assert given.worker_dir.is_absolute()  # the worker chdirs into it: no second relative hop


def test_show_config_masks_every_secret() -> None:
    settings = Settings.from_env(
        {
            "POSITION_MANAGER_API_KEYS": "risk:k3y-risk-secret:200",
            "POSITION_MANAGER_API_KEY": "single-secret-key",
            "POSTGRES_PASSWORD": "pg-secret-pw",
            "RABBITMQ_PASSWORD": "mq-secret-pw",
        }
    )
    text = settings.describe()
    for secret in ("k3y-risk-secret", "single-secret-key", "pg-secret-pw", "mq-secret-pw"):
        assert secret not in text
    assert "postgres_password = ***" in text and "risk:***:200" in text
    assert "app_id = position-manager" in text


def test_credentials_are_escaped_in_urls_and_hidden_in_repr() -> None:
    from urllib.parse import unquote, urlsplit

    s = Settings.from_env(
        {
            "POSTGRES_PASSWORD": "p@ss/w#rd?sslmode=disable",
            "RABBITMQ_USER": "desk:ops",
            "RABBITMQ_PASSWORD": "a@b/c",
            "RABBITMQ_VHOST": "/",
            "POSITION_MANAGER_API_KEY": "k3y-secret",
            "POSITION_MANAGER_INTERNAL_SECRET": "internal-secret-value",
        }
    )
    pg = urlsplit(s.postgres_dsn)
    assert (pg.hostname, pg.port, unquote(pg.password or "")) == (
        "127.0.0.1",
        5432,
        "p@ss/w#rd?sslmode=disable",
    )
    assert pg.query == "sslmode=prefer"
    mq = urlsplit(s.rabbitmq_url)
    assert (mq.hostname, unquote(mq.username or ""), unquote(mq.password or "")) == (
        "127.0.0.1",
        "desk:ops",
        "a@b/c",
    )
    assert unquote(mq.path[1:]) == "/"
    text = repr(s)
    for secret in ("p@ss", "a@b/c", "k3y-secret", "internal-secret-value"):
        assert secret not in text


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"POSITION_MANAGER_API_KEY": "change-me"}, "POSITION_MANAGER_API_KEY"),
        ({"POSITION_MANAGER_API_KEYS": "ui:dev-key"}, "POSITION_MANAGER_API_KEYS"),
        ({"POSTGRES_PASSWORD": "position_manager"}, "POSTGRES_PASSWORD"),
        ({"RABBITMQ_USER": "guest", "RABBITMQ_PASSWORD": "guest"}, "RABBITMQ_PASSWORD"),
        ({"POSITION_MANAGER_INTERNAL_SECRET": "short"}, "POSITION_MANAGER_INTERNAL_SECRET"),
    ],
)
def test_shipped_secrets_are_refused_beyond_loopback(env: dict[str, str], variable: str) -> None:
    own = {
        "POSITION_MANAGER_API_KEY": "a-key-of-our-own",
        "POSTGRES_PASSWORD": "pg-of-our-own",
        "RABBITMQ_USER": "desk",
        "RABBITMQ_PASSWORD": "mq-of-our-own",
        "POSITION_MANAGER_INTERNAL_SECRET": "x" * 32,
    }
    assert Settings.from_env({**own, "POSITION_MANAGER_WEB_BIND": "0.0.0.0"}).web_bind
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**own, **env, "POSITION_MANAGER_WEB_BIND": "0.0.0.0"})
    assert caught.value.variable == variable
    for loopback in ("127.0.0.1", "::1", "localhost"):
        Settings.from_env({**own, **env, "POSITION_MANAGER_WEB_BIND": loopback})


async def test_a_starting_worker_waits_for_kafka_with_progress_lines_then_gives_up() -> None:
    import time

    from structlog.testing import capture_logs

    from pm_streams.topics import wait_for_kafka

    settings = Settings(kafka_broker="kafka://127.0.0.1:9", kafka_wait=5.0)  # nothing there
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(Exception):  # noqa: B017 - aiokafka's own
        await wait_for_kafka(settings, attempt_timeout=1.0)
    waited = time.monotonic() - started
    lines = [line for line in logs if line["event"] == "kafka_unavailable"]
    assert len(lines) >= 2 and [line["attempt"] for line in lines][:2] == [1, 2]
    assert 1.0 <= waited <= 8.0
    assert Settings.from_env({"POSITION_MANAGER_KAFKA_WAIT": "2m"}).kafka_wait == 120
