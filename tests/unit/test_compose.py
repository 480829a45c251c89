"""docker-compose.yml cannot run here (no Docker engine), so it is held against what
`scripts/services` installs and runs: the same versions and host ports, a health check
and a restart policy on every long-running service."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])


def debian_version(package: str) -> str:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
    ).stdout
    return re.sub(r"^\d+:", "", out).split("-")[0]  # 1:25.2.3+dfsg-1 -> 25.2.3+dfsg


def test_images_are_the_versions_scripts_services_installs() -> None:
    services = compose()
    pom = (ROOT / "ops/kafka/pom.xml").read_text()
    kafka = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert kafka is not None
    assert services["kafka"]["image"] == f"apache/kafka:{kafka.group(1)}"
    postgres = debian_version("postgresql-15")
    assert services["postgres"]["image"].startswith(f"postgres:{postgres}")
    rabbitmq = debian_version("rabbitmq-server")
    assert services["rabbitmq"]["image"].startswith(f"rabbitmq:{rabbitmq}")


def test_every_long_running_service_has_a_health_check_and_restarts() -> None:
    for name, service in compose().items():
        if name == "migrate":  # a one-shot job the others wait for
            assert service.get("restart") is None
            continue
        assert service.get("restart") == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), name
    worker = compose()["position-manager"]
    assert "/readyz" in " ".join(worker["healthcheck"]["test"])


def test_host_ports_are_the_ones_scripts_services_uses() -> None:
    script = (ROOT / "scripts/services").read_text()
    services = compose()
    for name, var in (("postgres", "PG_PORT"), ("rabbitmq", "RMQ_PORT"), ("kafka", "KAFKA_PORT")):
        port = re.search(rf"^{var}=(\d+)$", script, re.M)
        assert port is not None
        assert f"127.0.0.1:{port.group(1)}:{port.group(1)}" in services[name]["ports"], name
    kafka_env = services["kafka"]["environment"]
    assert "EXTERNAL://127.0.0.1:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]


def test_the_worker_keeps_its_tables_in_rocksdb_on_a_volume() -> None:
    """The deployment path restarts in seconds (docs/benchmarks.md, recovery)."""
    worker = compose()["position-manager"]
    env = worker["environment"]
    assert env["POSITION_MANAGER_STORE"] == "${POSITION_MANAGER_STORE:-rocksdb://}"
    volumes = [v.split(":") for v in worker["volumes"]]
    assert [env["POSITION_MANAGER_DATA_DIR"]] == [target for _, target in volumes]


def test_the_outputs_run_beside_the_worker_as_scripts_run_starts_them() -> None:
    """Sink and republisher in their own process on the worker's port + 1, by default."""
    services = compose()
    worker, outputs = services["position-manager"], services["position-manager-outputs"]
    assert worker["environment"]["POSITION_MANAGER_OUTPUTS"] == (
        "${POSITION_MANAGER_OUTPUTS:-separate}"
    )
    assert "profiles" not in outputs  # started by a plain `docker compose up`
    worker_port = int(worker["environment"]["POSITION_MANAGER_PORT"])
    assert outputs["command"] == ["outputs", "--web-port", str(worker_port + 1)]
    script = (ROOT / "scripts/run").read_text()
    assert 'outputs="${POSITION_MANAGER_OUTPUTS:-separate}"' in script
    assert 'pm-streams outputs --web-port "$((port + 1))"' in script
