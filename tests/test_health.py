"""GET /_gateway/health: 200 while the database answers, 503 when it does not."""

from __future__ import annotations

from pathlib import Path

import requests

from gateway.api.context import POOL
from gateway.app import create_app
from gateway.config import load_config
from gateway.meta.db import create_pool


def test_health_of_live_gateway(gateway) -> None:
    response = requests.get(f"{gateway.endpoint}/_gateway/health", timeout=5)
    assert response.status_code == 200


async def test_health_reports_unreachable_database(
    aiohttp_client, local_dsn: str, tmp_path: Path
) -> None:
    # In-process, so one database will do: no need to run it once per profile's gateway.
    config = load_config(
        None, {"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_DATABASE_URL": local_dsn}
    )
    app = create_app(config)
    # Run without start-up hooks: the pool is handed in, then closed as if Postgres went away.
    app.cleanup_ctx.clear()
    pool = await create_pool(local_dsn, 1, 1)
    app[POOL] = pool
    http = await aiohttp_client(app)
    assert (await http.get("/_gateway/health")).status == 200
    await pool.close()
    response = await http.get("/_gateway/health")
    assert response.status == 503
    assert response.headers["x-amz-request-id"]
