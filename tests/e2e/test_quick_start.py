"""The README's quick start, command 1, exactly as written: `scripts/run` from a fresh
copy of the repository with default settings, then what the README tells a new user
to do with it: send a fill from the shell, read it back over REST (and find it in
Postgres, written by the outputs process beside the worker), open the API page, run
the demo, and stop the worker and its outputs process with Ctrl-C.

The copy shares this checkout's `.venv` (so `scripts/bootstrap` is a no-op, not a
second install); everything else, the relative default data dir included, is the
copy's own. It runs against the default deployment names (app id, queues, schema
`public`) as a user's first run does, on a fresh asset name each time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from pm_streams.settings import Settings
from tests.support.worker import ROOT

pytestmark = pytest.mark.e2e

PORT = 4800
URL = f"http://127.0.0.1:{PORT}"
OUTPUTS_URL = f"http://127.0.0.1:{PORT + 1}"  # `pm-streams outputs`, started beside it
KEY = "dev-key"  # the README: scripts/run uses dev-key when POSITION_MANAGER_API_KEY is unset


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def fresh_copy(dest: Path) -> Path:
    """The repository's files as a clone has them (tracked and not ignored), no var/."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        src = ROOT / name
        if name.startswith("var/") or not src.is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


def user_env() -> dict[str, str]:
    """The environment of a user who has set nothing for the service."""
    prefixes = ("POSITION_MANAGER_", "POSTGRES_", "RABBITMQ_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@pytest.fixture
def quick_start(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    for port in (PORT, PORT + 1):
        if not _port_free(port):
            pytest.fail(f"port {port} is taken: stop the local worker before running the suite")
    repo = fresh_copy(tmp_path / "position-manager")
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["scripts/run"], cwd=repo, env=user_env(), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc, repo, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


async def _get(session: aiohttp.ClientSession, path: str) -> tuple[int, str, bytes]:
    async with session.get(URL + path, headers={"X-API-Key": KEY}) as resp:
        return resp.status, resp.content_type, await resp.read()


async def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"scripts/run exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if (await _get(session, "/readyz"))[0] == 200:
                    return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.3)
    raise AssertionError(f"/readyz not 200 within {timeout}s:\n{_tail(log)}")


async def _wait_ledger_row(asset: str, timeout: float = 15) -> None:
    """The fill's ledger row in the default schema: the outputs process's sink wrote it."""
    connection = await asyncpg.connect(Settings().postgres_dsn)
    try:
        deadline = time.monotonic() + timeout
        query = "SELECT count(*) FROM position_fills WHERE asset = $1"
        while await connection.fetchval(query, asset) != 1:
            assert time.monotonic() < deadline, f"no ledger row for {asset} in {timeout}s"
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


def _cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(repo / ".venv/bin/pm-streams"), *args], cwd=repo, env=user_env(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def test_scripts_run_as_written(
    quick_start: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    proc, repo, log = quick_start
    await _wait_ready(proc, log, timeout=240)
    asset = f"QS{uuid.uuid4().hex[:8].upper()}USDT"

    sent = _cli(repo, "send", "fill", "--asset", asset, "--side", "BUY", "--qty", "1.5",
                "--price", "100.25", "--fee", "0.1")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    sent_at = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            status, _, body = await _get(session, f"/api/v1/positions/{asset}")
            if status == 200:
                break
            assert status == 404, body
            assert time.monotonic() - sent_at < 10, "the fill never reached the API"
            await asyncio.sleep(0.05)
        position = orjson.loads(body)
        assert position["size"] == "1.5" and position["average_entry_price"] == "100.25"
        assert position["total_fees"] == "0.1" and position["version"] == 1
        await _wait_ledger_row(asset)
        async with session.get(OUTPUTS_URL + "/health") as resp:
            assert resp.status == 200, await resp.text()

        pushed = _cli(repo, "send", "position", "--asset", asset, "--side", "Buy",
                      "--size", "1.5", "--mark-price", "101")  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        deadline = time.monotonic() + 10
        while True:
            position = orjson.loads((await _get(session, f"/api/v1/positions/{asset}"))[2])
            if position["current_price"] == "101":
                break
            assert time.monotonic() < deadline, position
            await asyncio.sleep(0.05)
        assert position["unrealized_pnl"] == "1.125"  # (101 - 100.25) * 1.5

        pages = (
            ("/api/v1/docs", "text/html"),
            ("/livez", "application/json"),
            ("/api/v1/docs/swagger-ui-bundle.js", "application/javascript"),
        )
        for path, kind in pages:
            status, content_type, _ = await _get(session, path)
            assert (status, content_type) == (200, kind), path

    demo = _cli(repo, "demo", "--fills", "300", "--assets", "6")
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "total_exposure_usdt" in demo.stdout and "/api/v1/docs" in demo.stdout

    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    stopping = time.monotonic()
    code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, _tail(log)
    assert time.monotonic() - stopping < 30
    assert (repo / "var/worker/position-manager/4800").is_dir()  # the relative default
