"""s3cmd, as its users run it: a config file naming the gateway, the root credential."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import REGION, ROOT_ACCESS_KEY, ROOT_SECRET_KEY, GatewayProcess


def s3cmd_runner(gateway: GatewayProcess, directory: Path) -> Callable[..., str]:
    """``run(*args)``: s3cmd (installed by the test extra beside this interpreter) with its
    configuration in ``directory``; its output, the test failing if it exits non-zero."""
    s3cmd = shutil.which("s3cmd", path=str(Path(sys.executable).parent)) or "s3cmd"
    config = directory / "s3cfg"
    host = f"127.0.0.1:{gateway.port}"
    config.write_text(
        "[default]\n"
        f"access_key = {ROOT_ACCESS_KEY}\n"
        f"secret_key = {ROOT_SECRET_KEY}\n"
        f"host_base = {host}\n"
        f"host_bucket = {host}\n"
        f"bucket_location = {REGION}\n"
        "use_https = False\n"
        "signature_v2 = False\n"
    )

    def run(*args: str) -> str:
        result = subprocess.run(
            [s3cmd, "-c", str(config), *args], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    return run
