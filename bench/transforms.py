"""Storage transforms benchmark: what encryption and chunking cost on a local profile.

    python bench/transforms.py [--size 1GiB] [--rounds 3] [--ranges 200] [--copies 100]

Starts one gateway (embedded Postgres, temp data dir) on 127.0.0.1 with three local profiles,
a bucket on each: plain, encrypted, and encrypted + chunked (8 MiB chunks, dedup). Then, in
alternating rounds so that all three see the same machine state:
- PUT and GET of one `--size` object of random bytes with curl (presigned URLs), in MB/s;
- `--ranges` GETs of 1 MiB at random offsets of that object, median milliseconds;
and once, on the encrypted + chunked profile, `--copies` PUTs of one 64 MiB object under
different keys, with the bytes its directory holds afterwards against the logical bytes.
Every transfer is checked (status and size; the GETs' MD5 against the file's).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import botocore.config
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REPO_ROOT, parse_size, publish

ACCESS_KEY, SECRET_KEY = "BENCHTRANSFORMS", "bench-transforms-secret"
PROFILES = {
    "plain": {"type": "local", "path": "plain"},
    "encrypted": {
        "type": "local",
        "path": "encrypted",
        "encryption": {"active_key": "k1", "keys": {"k1": "${BENCH_KEY}"}},
    },
    "encrypted+chunked": {
        "type": "local",
        "path": "chunked",
        "encryption": {"active_key": "k1", "keys": {"k1": "${BENCH_KEY}"}},
        "chunking": {"chunk_size": "8MiB", "dedup": True},
    },
}
KEY = "large.bin"
RANGE = 1024 * 1024
COPY_SIZE = 64 * 1024 * 1024


def bucket_of(profile: str) -> str:
    return "bench-" + profile.replace("+", "-")


class Gateway:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 19000 + random.randrange(1000)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = {
            "listen": f"127.0.0.1:{self.port}",
            "data_dir": str(self.workdir / "data"),
            "storage_profiles": {"default": {"type": "local"}, **PROFILES},
            "buckets": {bucket_of(name): {"profile": name} for name in PROFILES},
        }
        path = self.workdir / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {
            **os.environ,
            "GATEWAY_ROOT_ACCESS_KEY": ACCESS_KEY,
            "GATEWAY_ROOT_SECRET_KEY": SECRET_KEY,
            "BENCH_KEY": base64.b64encode(os.urandom(32)).decode(),
        }
        env.pop("GATEWAY_DATABASE_URL", None)
        log = open(self.workdir / "gateway.log", "wb")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(self.endpoint + "/_gateway/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                raise SystemExit(f"the gateway exited; see {self.workdir / 'gateway.log'}")
            time.sleep(0.5)
        raise SystemExit("the gateway did not become healthy")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)


def curl(method: str, url: str, source: Path | None, size: int) -> float:
    """MB/s of one transfer."""
    fmt = "%{http_code} %{time_total} " + (
        "%{size_upload}" if method == "PUT" else "%{size_download}"
    )
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", fmt, "--max-time", "600"]
    if source is not None:
        argv += ["-H", "Expect:", "-T", str(source)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=False)
    status, seconds, moved = out.stdout.split()
    if out.returncode or not status.startswith("2") or int(float(moved)) != size:
        raise SystemExit(f"{method} failed: {out.stdout} {out.stderr}")
    return size / float(seconds) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ranges", type=int, default=200)
    parser.add_argument("--copies", type=int, default=100)
    args = parser.parse_args()
    figures: dict[str, dict[str, list[float]]] = {
        name: {"put": [], "get": [], "range": []} for name in PROFILES
    }
    with tempfile.TemporaryDirectory(prefix="gateway-transforms-bench-") as tmp:
        workdir = Path(tmp)
        source = workdir / "large.bin"
        print(f"writing {args.size:,} random bytes ...", flush=True)
        with source.open("wb") as handle:
            for _ in range(0, args.size, 1 << 24):
                handle.write(os.urandom(min(1 << 24, args.size - handle.tell())))
        data_md5 = hashlib.md5(source.read_bytes()).hexdigest()
        gateway = Gateway(workdir)
        gateway.start()
        try:
            s3 = boto3.client(
                "s3",
                endpoint_url=gateway.endpoint,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                region_name="us-east-1",
                config=botocore.config.Config(signature_version="s3v4"),
            )

            def url(method: str, profile: str, key: str = KEY) -> str:
                operation = "put_object" if method == "PUT" else "get_object"
                params = {"Bucket": bucket_of(profile), "Key": key}
                return str(s3.generate_presigned_url(operation, Params=params, ExpiresIn=3600))

            for round_number in range(args.rounds):
                for profile in PROFILES:
                    put = curl("PUT", url("PUT", profile), source, args.size)
                    get = curl("GET", url("GET", profile), None, args.size)
                    head = s3.head_object(Bucket=bucket_of(profile), Key=KEY)
                    if head["ETag"].strip('"') != data_md5:
                        raise SystemExit(f"{profile}: stored ETag is not the file's MD5")
                    times = []
                    session = requests.Session()
                    for _ in range(args.ranges):
                        start = random.randrange(args.size - RANGE)
                        began = time.perf_counter()
                        answer = session.get(
                            url("GET", profile),
                            headers={"Range": f"bytes={start}-{start + RANGE - 1}"},
                            timeout=60,
                        )
                        times.append((time.perf_counter() - began) * 1000)
                        if answer.status_code != 206 or len(answer.content) != RANGE:
                            raise SystemExit(f"{profile}: range GET answered {answer.status_code}")
                    figures[profile]["put"].append(put)
                    figures[profile]["get"].append(get)
                    figures[profile]["range"].append(statistics.median(times))
                    print(
                        f"round {round_number + 1}, {profile}: PUT {put:,.0f} MB/s,"
                        f" GET {get:,.0f} MB/s, 1 MiB range {statistics.median(times):.1f} ms",
                        flush=True,
                    )
            copy = workdir / "copy.bin"
            copy.write_bytes(os.urandom(COPY_SIZE))
            chunked_dir = workdir / "data" / "chunked"
            for number in range(args.copies):
                curl("PUT", url("PUT", "encrypted+chunked", f"copy-{number}"), copy, COPY_SIZE)
            stored = sum(path.stat().st_size for path in chunked_dir.rglob("*") if path.is_file())
        finally:
            gateway.stop()
    logical = args.copies * COPY_SIZE + args.size
    header = [
        "local profile",
        "PUT MB/s",
        "GET MB/s",
        "1 MiB range GET ms",
        "PUT / plain",
        "GET / plain",
        "range / plain",
    ]
    plain = {name: statistics.median(values) for name, values in figures["plain"].items()}
    rows = []
    for profile, values in figures.items():
        med = {name: statistics.median(v) for name, v in values.items()}
        rows.append(
            [
                profile,
                f"{med['put']:,.0f}",
                f"{med['get']:,.0f}",
                f"{med['range']:.1f}",
                f"{med['put'] / plain['put']:.2f}",
                f"{med['get'] / plain['get']:.2f}",
                f"{med['range'] / plain['range']:.2f}",
            ]
        )
    dedup = [
        ["logical bytes", f"{logical:,}"],
        ["bytes stored", f"{stored:,}"],
        ["stored / one copy", f"{stored / (COPY_SIZE + args.size):.3f}"],
    ]
    dedup_header = [
        f"dedup: {args.copies} copies of one 64 MiB object (plus the {args.size:,}-byte one),"
        " encrypted + chunked",
        "bytes",
    ]
    record = {"size": args.size, "figures": figures, "logical_bytes": logical, "stored": stored}
    publish("transforms", [(header, rows), (dedup_header, dedup)], record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
