"""Benchmark of the gateway against nginx (static-file ceiling) and moto_server (Python S3 peer).

Starts each system on 127.0.0.1 in turn, replays identical pre-signed requests at it (wrk for
4 KiB objects, curl for one large object), samples RSS, stops it, then prints the figures and
the target ratios and writes them under bench/results/. See bench/README.md.

    python bench/run.py [--systems gateway,moto,nginx] [--duration 10] [--connections 64]
                        [--large-size 1GiB] [--database-url DSN]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import http.client
import json
import os
import platform
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk" / "replay.lua"

REGION = "us-east-1"
BUCKET = "bench"
SMALL_SIZE = 4096
LARGE_KEY = "large/object.bin"
MIB = 1024 * 1024
ALL_SYSTEMS = ("gateway", "moto", "nginx")


class BenchError(Exception):
    """A failure that makes a figure meaningless; reported, never measured around."""


# What a system or a tool can throw at us; anything else is a bug here and should crash.
FAILURES = (BenchError, OSError, subprocess.SubprocessError, BotoCoreError, ClientError)


def describe(e: BaseException) -> str:
    return str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------------------------------------
# Small helpers


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 256MiB, 100MB)")
    number, unit, binary = float(m.group(1)), m.group(2).upper(), m.group(3)
    base = 1024 if binary else 1000
    return int(number * base ** ("", "K", "M", "G", "T").index(unit))


def human_size(n: int) -> str:
    units = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("GB", 10**9), ("MB", 10**6))
    for unit, factor in units:
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_tool(name: str) -> str:
    # Prefer the running interpreter's venv (moto_server lives there), then PATH.
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    # nginx lives in sbin, which an unprivileged user's PATH may lack.
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not found:
        hint = "bench/setup.sh installs it" if name in ("nginx", "wrk", "curl") else "pip install"
        raise BenchError(f"{name} not found ({hint})")
    return found


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    # First version-looking word of the banner, e.g. "nginx version: nginx/1.22.1".
    m = re.search(r"\d+\.\d+[\w.+~-]*", out.stdout + out.stderr)
    return m.group(0) if m else "unknown"


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def ensure_large_file(path: Path, size: int) -> None:
    if path.exists():
        if path.stat().st_size != size:
            raise BenchError(f"--large-file exists with {path.stat().st_size} bytes, not {size}")
        return
    print(f"creating {human_size(size)} of random bytes for the large transfers ...", flush=True)
    tmp = path.with_name(path.name + ".partial")
    chunk = 16 * MIB
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n
    tmp.rename(path)


def md5_file(path: Path) -> str:
    # Reading it also puts the file in the page cache, so no system's PUT pays for the disk.
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Processes and memory


def proc_tree(root: int) -> list[int]:
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except OSError:
            continue  # exited between listing and reading
    return pids


def vm_status(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes; (0, 0) once the process is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, hwm


def reset_hwm(pid: int) -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples the RSS of a process and its descendants every `interval` seconds."""

    def __init__(self, root_pid: int, interval: float = 0.05) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.tree: list[int] = []  # summed RSS of the whole tree, bytes
        self.main: list[int] = []  # RSS of the root process alone, bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids: list[int] = []
        next_tree = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_tree:  # walking the tree costs more than reading it; do it 4x/s
                pids, next_tree = proc_tree(self.root_pid), now + 0.25
            rss = [vm_status(p)[0] for p in pids]
            self.tree.append(sum(rss))
            self.main.append(rss[0] if rss else 0)
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU-seconds all cores spent not idle since boot."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    # Steal (time the hypervisor gave to other guests) is nobody's work here; guest time is
    # already inside user.
    return (user + nice + system + irq + softirq) / CLK_TCK


def process_cpu(pids: list[int]) -> dict[int, float]:
    """CPU-seconds of each process, including its reaped children."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
    return out


def kernel_cpu() -> float:
    """CPU-seconds of all kernel threads (children of kthreadd, pid 2): writeback and the like."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == "2" or entry.name == "2":
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


class CpuMeter:
    """Splits the machine's CPU time over windows into server, helper, load generator,
    kernel threads and other.

    "helper" is a process that works for the server without being its child (the gateway's
    embedded Postgres); "kernel" is mostly page-cache writeback and network softirq work
    done in kernel threads. "other" is everything else: concurrent jobs on a shared machine,
    which make the figures unreliable.
    """

    def __init__(self, system: System) -> None:
        self.system = system
        parts = ("seconds", "server", "helper", "client", "kernel", "other")
        self.totals = dict.fromkeys(parts, 0.0)

    @staticmethod
    def _own() -> float:
        t = os.times()  # wrk and curl are our reaped children
        return t.user + t.system + t.children_user + t.children_system

    @staticmethod
    def _delta(start: dict[int, float], end: dict[int, float]) -> float:
        return sum(v - start.get(pid, 0.0) for pid, v in end.items())

    @contextmanager
    def window(self) -> Iterator[None]:
        wall, busy, own, kernel = time.monotonic(), machine_busy(), self._own(), kernel_cpu()
        server = process_cpu(self.system.server_pids())
        helper = process_cpu(self.system.helper_pids())
        try:
            yield
        finally:
            srv = self._delta(server, process_cpu(self.system.server_pids()))
            hlp = self._delta(helper, process_cpu(self.system.helper_pids()))
            busy, own, kernel = machine_busy() - busy, self._own() - own, kernel_cpu() - kernel
            self.totals["seconds"] += time.monotonic() - wall
            self.totals["server"] += srv
            self.totals["helper"] += hlp
            self.totals["client"] += own
            self.totals["kernel"] += kernel
            self.totals["other"] += max(0.0, busy - srv - hlp - own - kernel)

    def report(self) -> dict[str, float]:
        """Average cores used by each part, and "other" as a share of the whole machine."""
        secs = self.totals["seconds"] or 1.0
        report = {
            f"{k}_cores": round(v / secs, 2) for k, v in self.totals.items() if k != "seconds"
        }
        report["other_pct"] = round(100 * self.totals["other"] / (secs * (os.cpu_count() or 1)), 1)
        return report


class Proc:
    """A server process started in its own session so that nothing it spawns can outlive it."""

    def __init__(self, name: str, argv: list[str], log: Path, **kw: Any) -> None:
        self.name, self.log_path = name, log
        with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **kw,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, grace: float = 30.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} ignored SIGTERM for {grace:.0f}s; killing it", flush=True)
                self.popen.kill()
        self.popen.wait()
        # Whatever it left in its process group (whose id is its PID) goes too.
        sig: int = signal.SIGTERM
        start = time.monotonic()
        while time.monotonic() - start < 15:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            if sig == signal.SIGTERM:
                print(f"  {self.name} left processes in its group; stopping them", flush=True)
            time.sleep(0.1)
            sig = signal.SIGKILL if time.monotonic() - start > 5 else 0  # 0: only probe
        print(f"  !! processes of {self.name}'s group {self.pid} survived SIGKILL", flush=True)


# ---------------------------------------------------------------------------------------------
# Systems under test


@dataclasses.dataclass
class Objects:
    small_keys: list[str]
    put_keys: list[str]
    bodies: list[bytes]
    large_file: Path
    large_size: int
    large_md5: str


def s3_client(endpoint: str, access: str, secret: str) -> Any:
    cfg = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1, "mode": "standard"},
        max_pool_connections=16,
        connect_timeout=10,
        read_timeout=300,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=cfg,
    )


def request_target(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


class System:
    name = ""
    s3 = True  # False: serves reads only (nginx)

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.args = args
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access_key = "BENCH" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.proc: Proc | None = None
        self.client = s3_client(self.endpoint, self.access_key, self.secret_key)

    def start(self) -> None:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        assert self.proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise BenchError(
                    f"{self.name} exited with status {self.proc.popen.returncode} while "
                    f"starting; last log lines:\n{self.proc.log_tail()}"
                )
            if self.healthy():
                return
            time.sleep(0.25)
        raise BenchError(
            f"{self.name} not ready after {timeout:.0f}s; last log lines:\n{self.proc.log_tail()}"
        )

    def server_pids(self) -> list[int]:
        """The system's process and its descendants, for CPU accounting."""
        return proc_tree(self.proc.pid) if self.proc else []

    def helper_pids(self) -> list[int]:
        """Processes outside that tree that work for the system."""
        return []

    def stop(self) -> list[str]:
        """Stops the system; returns notes on anything odd about how it went down."""
        if self.proc:
            self.proc.stop()
        return []

    def presign(self, method: str, key: str) -> str:
        op = {"GET": "get_object", "PUT": "put_object"}[method]
        url = self.client.generate_presigned_url(
            op, Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600
        )
        return str(url)

    def prepare(self, objs: Objects) -> None:
        self.client.create_bucket(Bucket=BUCKET)

        def put(i: int) -> None:
            self.client.put_object(Bucket=BUCKET, Key=objs.small_keys[i], Body=objs.bodies[i])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(len(objs.small_keys))))
        # Spot-check through the same pre-signed path the load uses.
        status = http_status(self.port, request_target(self.presign("GET", objs.small_keys[0])))
        if status != 200:
            raise BenchError(f"pre-signed GET of a prepared object answered {status}")

    def check_large(self, objs: Objects) -> str | None:
        """Checks the stored large object; returns a note on anything odd."""
        head = self.client.head_object(Bucket=BUCKET, Key=LARGE_KEY)
        if head["ContentLength"] != objs.large_size:
            raise BenchError(f"stored large object has {head['ContentLength']} bytes")
        etag = str(head.get("ETag", "")).strip('"')
        if etag != objs.large_md5:
            return f"{self.name}: large object ETag {etag!r} is not its MD5 {objs.large_md5}"
        return None


class GatewaySystem(System):
    name = "gateway"

    def start(self) -> None:
        data = self.workdir / "data"
        data.mkdir()
        env = dict(os.environ)
        env.pop("GATEWAY_DATABASE_URL", None)
        env.update(
            GATEWAY_LISTEN=f"127.0.0.1:{self.port}",
            GATEWAY_DATA_DIR=str(data),
            GATEWAY_ROOT_ACCESS_KEY=self.access_key,
            GATEWAY_ROOT_SECRET_KEY=self.secret_key,
            GATEWAY_WORKERS=str(self.args.gateway_workers),
            PYTHONUNBUFFERED="1",
        )
        if self.args.database_url:
            env["GATEWAY_DATABASE_URL"] = self.args.database_url
        for item in self.args.gateway_env:
            k, _, v = item.partition("=")
            env[k] = v
        argv = [sys.executable, "-m", "gateway", "serve"]
        self.proc = Proc(self.name, argv, self.workdir / "gateway.log", cwd=REPO_ROOT, env=env)
        self.wait_ready(self.args.start_timeout)

    def healthy(self) -> bool:
        return http_status(self.port, "/_gateway/health") == 200

    def helper_pids(self) -> list[int]:
        # The embedded Postgres is detached from the gateway but works for it.
        pids = []
        for pidfile in (self.workdir / "data").glob("*/postmaster.pid"):
            try:
                pids += proc_tree(int(pidfile.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
        return pids

    def stop(self) -> list[str]:
        notes = super().stop()
        # The embedded Postgres may detach from the gateway's process group (pg_ctl does);
        # one still serving our data dir after the gateway exited is a leak worth reporting.
        for pidfile in (self.workdir / "data").glob("*/postmaster.pid"):
            try:
                pid = int(pidfile.read_text().split()[0])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if str(pidfile.parent).encode() not in cmdline:
                continue
            notes.append(f"gateway exited but left its Postgres (pid {pid}) running; stopped it")
            try:
                os.kill(pid, signal.SIGINT)  # Postgres' fast shutdown
                for _ in range(100):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.1)
                else:
                    os.kill(pid, signal.SIGQUIT)
            except ProcessLookupError:
                pass
        return notes


class MotoSystem(System):
    name = "moto"

    def start(self) -> None:
        argv = [find_tool("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = Proc(self.name, argv, self.workdir / "moto.log")
        self.wait_ready(60)

    def healthy(self) -> bool:
        return http_status(self.port, "/moto-api/data.json") == 200


class NginxSystem(System):
    name = "nginx"
    s3 = False

    def start(self) -> None:
        self.root = self.workdir / "root"
        (self.root / BUCKET).mkdir(parents=True)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / "tmp" / sub).mkdir(parents=True)
        # As root the workers would drop to "nobody" and could not read a private temp dir.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        conf = f"""
{user}
daemon off;
worker_processes auto;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {self.workdir}/tmp/body;
    proxy_temp_path {self.workdir}/tmp/proxy;
    fastcgi_temp_path {self.workdir}/tmp/fastcgi;
    uwsgi_temp_path {self.workdir}/tmp/uwsgi;
    scgi_temp_path {self.workdir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        location = /_ready {{ return 200; }}
    }}
}}
"""
        (self.workdir / "nginx.conf").write_text(conf)
        argv = [
            find_tool("nginx"),
            "-p",
            str(self.workdir),
            "-c",
            str(self.workdir / "nginx.conf"),
            "-e",
            str(self.workdir / "error.log"),
        ]
        self.proc = Proc(self.name, argv, self.workdir / "nginx.log")
        self.wait_ready(30)

    def healthy(self) -> bool:
        return http_status(self.port, "/_ready") == 200

    def prepare(self, objs: Objects) -> None:
        # The same files at the same paths; nginx ignores the signature query string.
        for key, body in zip(objs.small_keys, objs.bodies, strict=True):
            path = self.root / BUCKET / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        large = self.root / BUCKET / LARGE_KEY
        large.parent.mkdir(parents=True, exist_ok=True)
        large.symlink_to(objs.large_file.resolve())
        status = http_status(self.port, request_target(self.presign("GET", objs.small_keys[0])))
        if status != 200:
            raise BenchError(f"nginx answered {status} for a prepared file")


SYSTEM_CLASSES: dict[str, type[System]] = {
    "gateway": GatewaySystem,
    "moto": MotoSystem,
    "nginx": NginxSystem,
}


# ---------------------------------------------------------------------------------------------
# Workloads


def run_wrk(
    system: System,
    paths_file: Path,
    method: str,
    seconds: float,
    args: argparse.Namespace,
    headers: Iterable[str] = (),
) -> dict[str, Any]:
    """``headers``: extra "Name: value" headers sent with every request."""
    body = SMALL_SIZE if method == "PUT" else 0
    expect = SMALL_SIZE if method == "GET" else -1
    threads = min(args.threads, args.connections)
    argv = [
        find_tool("wrk"),
        f"-t{threads}",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        "--timeout",
        f"{args.request_timeout:g}s",
        *(option for header in headers for option in ("-H", header)),
        "-s",
        str(WRK_SCRIPT),
        system.endpoint,
        "--",
        str(paths_file),
        method,
        str(body),
        str(expect),
        str(threads),
    ]
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout}")
    raw = json.loads(line.split(" ", 1)[1])
    errors = {k: v for k, v in raw["errors"].items() if v and k != "status"}
    problems = []
    if raw["bad_status"]:
        problems.append(f"{raw['bad_status']} non-2xx responses (e.g. {raw['bad_sample'][:80]})")
    if raw["bad_length"]:
        problems.append(f"{raw['bad_length']} responses with a body that is not {expect} bytes")
    if errors:
        problems.append(f"socket errors {errors}")
    if raw["requests"] == 0:
        problems.append("no request completed")
    pct = raw["latency_us"]["percentiles"]
    result = {
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": pct["50"] / 1000,
        "p90_ms": pct["90"] / 1000,
        "p99_ms": pct["99"] / 1000,
        "p999_ms": pct["99.9"] / 1000,
        "max_ms": raw["latency_us"]["max"] / 1000,
        "errors": raw["errors"],
        "bad_status": raw["bad_status"],
        "bad_length": raw["bad_length"],
        "problems": problems,
    }
    if problems:
        raise WorkloadInvalid("; ".join(problems), result)
    return result


class WorkloadInvalid(BenchError):
    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def small_workload(
    system: System, method: str, keys: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    paths = system.workdir / f"paths-{method.lower()}.txt"
    paths.write_text("".join(request_target(system.presign(method, k)) + "\n" for k in keys))
    if args.warmup > 0:
        run_wrk(system, paths, method, args.warmup, args)  # also validated: errors fail here
    meter = CpuMeter(system)
    with meter.window():
        try:
            result = run_wrk(system, paths, method, args.duration, args)
        except WorkloadInvalid as e:
            e.result["cpu"] = meter.report()
            raise
    return result | {"cpu": meter.report()}


def curl_transfer(method: str, url: str, objs: Objects, max_time: float) -> dict[str, Any]:
    fmt = "%{http_code} %{time_total} " + (
        "%{size_upload}" if method == "PUT" else "%{size_download}"
    )
    argv = [find_tool("curl"), "-sS", "-o", "/dev/null", "-w", fmt, "--max-time", f"{max_time:g}"]
    if method == "PUT":
        # No "Expect: 100-continue": servers that ignore it would cost curl a 1 s wait.
        argv += ["-H", "Expect:", "-T", str(objs.large_file)]
    out = subprocess.run(
        [*argv, url], check=False, capture_output=True, text=True, timeout=max_time + 30
    )
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 3:
        raise BenchError(f"curl {method} failed ({out.returncode}): {out.stderr.strip()}")
    status, seconds, size = int(fields[0]), float(fields[1]), int(float(fields[2]))
    if not 200 <= status < 300:
        raise BenchError(f"large {method} answered HTTP {status}")
    if size != objs.large_size:
        raise BenchError(f"large {method} moved {size} bytes, not {objs.large_size}")
    return {"status": status, "seconds": seconds, "mb_s": size / seconds / 1e6}


def large_workload(
    system: System, method: str, objs: Objects, args: argparse.Namespace
) -> dict[str, Any]:
    url = system.presign(method, LARGE_KEY)
    meter = CpuMeter(system)
    speeds = []
    for _ in range(args.large_repeat):
        # Write back the previous transfer's dirty pages first, so no run pays for another's.
        os.sync()
        with meter.window():
            speeds.append(curl_transfer(method, url, objs, args.large_timeout)["mb_s"])
    return {
        "mb_s": statistics.median(speeds),
        "runs_mb_s": speeds,
        "bytes": objs.large_size,
        "cpu": meter.report(),
    }


# ---------------------------------------------------------------------------------------------
# One system, end to end


def measure_idle(pid: int, seconds: float) -> dict[str, int]:
    with RssSampler(pid) as s:
        time.sleep(seconds)
    return {"tree": int(statistics.median(s.tree)), "main": int(statistics.median(s.main))}


def run_step(
    system: System,
    res: dict[str, Any],
    name: str,
    fn: Callable[[], dict[str, Any] | None],
    other_cpu_warn: float | None = None,
) -> None:
    """Runs one measurement or check of ``system`` into ``res[name]``, recording a failure as
    a problem; raises BenchError if the system died meanwhile. A check may return None."""
    print(f"  {system.name}: {name} ...", flush=True)
    out = None
    try:
        out = fn()
    except WorkloadInvalid as e:
        out = e.result | {"invalid": True}
        res["problems"].append(f"{name}: {e}")
        print(f"  !! {system.name} {name} INVALID: {e}", flush=True)
    except FAILURES as e:
        record_failure(res, f"{system.name} {name}", e, problem_prefix=f"{name}: ", indent="  ")
    finally:
        if system.proc and not system.proc.alive():
            raise BenchError(
                f"{system.name} died during {name} (status {system.proc.popen.returncode});"
                f" last log lines:\n{system.proc.log_tail()}"
            )
    if out is None:
        return
    res[name] = out
    if "mb_s" in out or "rps" in out:
        print(f"     {summarize(name, out)}", flush=True)
    other = out.get("cpu", {}).get("other_pct", 0.0)
    if other_cpu_warn is not None and other > other_cpu_warn:
        print(f"  !! other processes took {other:.0f}% of the machine's CPU", flush=True)


def record_failure(
    res: dict[str, Any], what: str, e: BaseException, problem_prefix: str = "", indent: str = ""
) -> None:
    """Notes a failure of ``what`` in ``res`` (a problem) and on the console."""
    res["problems"].append(problem_prefix + describe(e))
    print(f"{indent}!! {what} FAILED: {describe(e)}", flush=True)


def bench_system(
    system: System, objs: Objects, args: argparse.Namespace, res: dict[str, Any]
) -> None:
    """Fills `res` as it goes, so a system that dies midway still reports what it did."""

    def step(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        run_step(system, res, name, fn, args.other_cpu_warn)

    print(f"starting {system.name} on {system.endpoint} ...", flush=True)
    t0 = time.monotonic()
    system.start()
    assert system.proc
    res["start_seconds"] = round(time.monotonic() - t0, 2)
    pid = system.proc.pid
    time.sleep(1)
    res["rss_startup"] = measure_idle(pid, 1.0)
    print(f"  {system.name}: preparing {len(objs.small_keys)} objects ...", flush=True)
    system.prepare(objs)

    step("small_get", lambda: small_workload(system, "GET", objs.small_keys, args))
    if system.s3:
        step("small_put", lambda: small_workload(system, "PUT", objs.put_keys, args))

    time.sleep(2)  # let deferred work from the small PUTs settle before taking the baseline
    res["rss_idle"] = measure_idle(pid, 1.5)
    hwm_reset = reset_hwm(pid)
    with RssSampler(pid) as sampler:
        if system.s3:
            step("large_put", lambda: large_workload(system, "PUT", objs, args))
            if "large_put" in res:
                try:
                    note = system.check_large(objs)
                    if note:
                        res["notes"].append(note)
                except FAILURES as e:
                    res["problems"].append(f"large object check: {describe(e)}")
        if not system.s3 or "large_put" in res:  # without the object a GET measures a 404
            step("large_get", lambda: large_workload(system, "GET", objs, args))
    hwm_main = vm_status(pid)[1] if hwm_reset else 0
    idle = res["rss_idle"]
    # The kernel's high-water mark catches a spike of the main process between two samples.
    peak_tree = max(max(sampler.tree, default=0), hwm_main + idle["tree"] - idle["main"])
    res["rss_large"] = {
        "peak_tree": peak_tree,
        "peak_tree_sampled": max(sampler.tree, default=0),
        "peak_main_sampled": max(sampler.main, default=0),
        "hwm_main": hwm_main,
        "samples": len(sampler.tree),
        "processes": len(proc_tree(pid)),
    }
    if res["problems"]:
        res["status"] = "invalid"


def summarize(name: str, r: dict[str, Any]) -> str:
    if name.startswith("small"):
        text = (
            f"{r['rps']:.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
            f"  ({r['requests']} requests)"
        )
    else:
        runs = ", ".join(f"{v:.0f}" for v in r["runs_mb_s"])
        text = f"{r['mb_s']:.0f} MB/s median of [{runs}]"
    if cpu := r.get("cpu"):
        helper = f" + Postgres {cpu['helper_cores']:.2f}" if cpu["helper_cores"] else ""
        text += (
            f"\n     CPU cores: server {cpu['server_cores']:.2f}{helper}, load generator"
            f" {cpu['client_cores']:.2f}, kernel threads {cpu['kernel_cores']:.2f},"
            f" other {cpu['other_cores']:.2f}"
        )
    return text


# ---------------------------------------------------------------------------------------------
# Targets and report


@dataclasses.dataclass
class Target:
    name: str
    unit: str  # "x": ratio, "MiB": RSS growth
    goal: float
    at_most: bool = False
    value: float | None = None
    result: str = "n/a"  # pass, fail, invalid, n/a
    detail: str = ""

    def goal_text(self) -> str:
        op = "<=" if self.at_most else ">="
        return f"{op} {self.goal:g}x" if self.unit == "x" else f"{op} {self.goal:g} {self.unit}"

    def value_text(self) -> str:
        if self.value is None:
            return "-"
        if self.unit == "x":
            return f"{self.value:.3g}x"
        return f"{self.value:.1f} MiB"


def figure(results: dict[str, Any], system: str, workload: str, key: str) -> float | None:
    r = results.get(system, {}).get(workload)
    if not r or r.get("invalid"):
        return None
    return float(r[key])


def evaluate(results: dict[str, Any], large: str) -> list[Target]:
    def ratio(t: Target, workload: str, key: str, other: str) -> Target:
        gw, peer = figure(results, "gateway", workload, key), figure(results, other, workload, key)
        if "gateway" not in results or other not in results:
            return t
        if gw is None or not peer:
            t.result = "invalid"
            return t
        t.value = gw / peer
        t.detail = f"{gw:.1f} / {peer:.1f}"
        t.result = "pass" if t.value >= t.goal else "fail"
        return t

    targets = [
        ratio(Target("4 KiB GET, gateway / moto", "x", 10), "small_get", "rps", "moto"),
        ratio(Target("4 KiB GET, gateway / nginx", "x", 0.06), "small_get", "rps", "nginx"),
        ratio(Target("4 KiB PUT, gateway / moto", "x", 4), "small_put", "rps", "moto"),
        ratio(Target(f"{large} GET, gateway / nginx", "x", 0.6), "large_get", "mb_s", "nginx"),
        ratio(Target(f"{large} PUT, gateway / moto", "x", 3), "large_put", "mb_s", "moto"),
    ]
    rss = Target(f"gateway RSS peak - idle, {large} transfers", "MiB", 64, at_most=True)
    gw = results.get("gateway")
    if gw and "rss_large" in gw:
        grown = (gw["rss_large"]["peak_tree"] - gw["rss_idle"]["tree"]) / MIB
        rss.value = grown
        rss.detail = (
            f"{gw['rss_large']['peak_tree'] / MIB:.1f} - {gw['rss_idle']['tree'] / MIB:.1f}"
        )
        transferred = "large_put" in gw and "large_get" in gw
        rss.result = ("pass" if grown <= rss.goal else "fail") if transferred else "invalid"
    elif gw:
        rss.result = "invalid"
    targets.append(rss)
    return targets


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def other_cpu(result: dict[str, Any]) -> str:
    shares = [r["cpu"]["other_pct"] for r in result.values() if isinstance(r, dict) and "cpu" in r]
    return fmt(max(shares), 0) if shares else "-"


def figure_rows(results: dict[str, Any], systems: list[str], large: str, conns: int) -> list:
    def cell(system: str, workload: str, key: str, digits: int) -> str:
        r = results.get(system, {}).get(workload)
        if not r:
            return "-"
        return fmt(r[key], digits) + (" INVALID" if r.get("invalid") else "")

    def rss(system: str, part: str, key: str) -> str:
        r = results.get(system, {}).get(part)
        return fmt(r[key] / MIB) if r else "-"

    rows = [
        ([f"4 KiB GET x{conns}, req/s"], "small_get", "rps", 0),
        ([f"4 KiB GET x{conns}, p50 ms"], "small_get", "p50_ms", 2),
        ([f"4 KiB GET x{conns}, p99 ms"], "small_get", "p99_ms", 2),
        ([f"4 KiB PUT x{conns}, req/s"], "small_put", "rps", 0),
        ([f"4 KiB PUT x{conns}, p50 ms"], "small_put", "p50_ms", 2),
        ([f"4 KiB PUT x{conns}, p99 ms"], "small_put", "p99_ms", 2),
        ([f"{large} PUT, MB/s"], "large_put", "mb_s", 0),
        ([f"{large} GET, MB/s"], "large_get", "mb_s", 0),
    ]
    out = [label + [cell(s, w, k, d) for s in systems] for label, w, k, d in rows]
    out.append(["RSS after start, MiB"] + [rss(s, "rss_startup", "tree") for s in systems])
    out.append(["RSS idle, MiB"] + [rss(s, "rss_idle", "tree") for s in systems])
    out.append(
        [f"RSS peak during {large}, MiB"] + [rss(s, "rss_large", "peak_tree") for s in systems]
    )
    # Above a few percent the machine was shared and the figures above are suspect.
    out.append(["other processes' CPU, max %"] + [other_cpu(results.get(s, {})) for s in systems])
    return out


def cpu_rows(results: dict[str, Any], systems: list[str]) -> list[list[str]]:
    rows = []
    for system in systems:
        for workload in ("small_get", "small_put", "large_put", "large_get"):
            cpu = results.get(system, {}).get(workload, {}).get("cpu")
            if cpu:
                parts = (
                    "server_cores",
                    "helper_cores",
                    "client_cores",
                    "kernel_cores",
                    "other_cores",
                )
                rows.append([system, workload] + [fmt(cpu[k], 2) for k in parts])
    return rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *rows]):
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


Table = tuple[list[str], list[list[str]]]


def publish(name: str, tables: list[Table], results: dict[str, Any]) -> None:
    """Prints ``tables`` and keeps them, with ``results``, as results/NAME-<UTC time>.md and
    .json, so that no run overwrites an earlier one."""
    for header, rows in tables:
        print()
        print(text_table(header, rows))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    markdown = "\n\n".join(md_table(header, rows) for header, rows in tables)
    write_results(BENCH_DIR / "results", f"{name}-{stamp}", results, [markdown])


def report_comparison(
    name: str,
    what: str,
    figures: dict[str, list[float]],
    costs: dict[str, list[float]],
    others: list[float],
    ratio_label: str,
) -> None:
    """Print, and keep through ``publish``, two configurations' req/s per round and gateway CPU
    per request; ``figures`` and ``costs`` hold the baseline first, and the last row is the
    second over the first (``ratio_label``)."""
    baseline, candidate = figures
    header = [what, "median req/s", "rounds", "median gateway CPU us/request"]
    rows = [
        [
            label,
            f"{statistics.median(values):,.0f}",
            ", ".join(f"{v:,.0f}" for v in values),
            f"{statistics.median(costs[label]):.0f}",
        ]
        for label, values in figures.items()
    ]
    speed = statistics.median(figures[candidate]) / statistics.median(figures[baseline])
    cost = statistics.median(costs[candidate]) / statistics.median(costs[baseline])
    rows.append([ratio_label, f"{speed:.3f}", "", f"{cost:.3f}"])
    print(f"other processes: up to {max(others)}% of the machine in a round")
    publish(name, [(header, rows)], {"req_s": figures, "cpu_us": costs, "other_cpu": others})


def target_rows(targets: list[Target]) -> list[list[str]]:
    return [[t.name, t.value_text(), t.goal_text(), t.result.upper(), t.detail] for t in targets]


def environment(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    def git(*cmd: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *cmd], check=False, capture_output=True, text=True
        )
        return out.stdout.strip()

    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": git("rev-parse", "--short", "HEAD") or "none",
        "git_dirty": bool(git("status", "--porcelain", "--", ".")),
        "wrk": tool_version(["wrk", "-v"]),
        "curl": tool_version(["curl", "--version"]),
        "nginx": tool_version(["nginx", "-v"]) if "nginx" in args.systems else "unused",
        "moto": pkg("moto"),
        "boto3": pkg("boto3"),
    }


# ---------------------------------------------------------------------------------------------
# Main


def busy_note(results: dict[str, Any], threshold: float) -> str | None:
    """A note when processes outside the benchmark took more than ``threshold`` % of the CPU
    during any measurement."""
    busy = {
        f"{system} {workload}": r["cpu"]["other_pct"]
        for system, res in results.items()
        for workload, r in res.items()
        if isinstance(r, dict) and r.get("cpu", {}).get("other_pct", 0.0) > threshold
    }
    if not busy:
        return None
    worst = max(busy, key=lambda k: busy[k])
    return (
        f"the machine was not quiet: processes outside the benchmark took more than"
        f" {threshold:g}% of its CPU during {len(busy)} measurement(s), up to"
        f" {busy[worst]:.0f}% ({worst}); these figures are unreliable"
    )


def add_workload_arguments(p: argparse.ArgumentParser, connections: int, large_size: str) -> None:
    """The options of the 4 KiB and large workloads (shared with the other bench scripts)."""
    p.add_argument("--duration", type=float, default=10, help="seconds per 4 KiB run (10)")
    p.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before each (2)")
    p.add_argument(
        "--connections",
        type=int,
        default=connections,
        help=f"concurrent clients ({connections})",
    )
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--objects", type=int, default=1000, help="distinct 4 KiB keys (1000)")
    p.add_argument(
        "--request-timeout",
        type=float,
        default=30,
        help="wrk counts slower requests as timeouts, which invalidate a run (30)",
    )
    p.add_argument(
        "--large-size",
        type=parse_size,
        default=parse_size(large_size),
        help=f"size of the large object ({large_size})",
    )
    p.add_argument(
        "--large-file",
        type=Path,
        help="random file for the large transfers; created if missing, reused if it"
        " has --large-size bytes (default: a new one in the temp dir)",
    )
    p.add_argument(
        "--large-repeat",
        type=int,
        default=3,
        help="transfers of the large object per direction; the median counts (3)",
    )
    p.add_argument("--large-timeout", type=float, default=600, help="seconds per transfer (600)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Where a run keeps its files, and when it calls the machine too busy (shared)."""
    p.add_argument(
        "--other-cpu-warn",
        type=float,
        default=10,
        help="note a run during which other processes used more than this %% of"
        " the machine's CPU (10)",
    )
    p.add_argument("--tmp-dir", type=Path, help="where the run's temp dir goes (system default)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, data)")
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help="comma-separated subset of gateway,moto,nginx (default: all)",
    )
    add_workload_arguments(p, connections=64, large_size="1GiB")
    p.add_argument(
        "--database-url",
        help="GATEWAY_DATABASE_URL for the gateway (default: its embedded Postgres)",
    )
    p.add_argument(
        "--gateway-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="gateway processes sharing the port, as deployed: one per core (default: cores)",
    )
    p.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway (repeatable)",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=120,
        help="seconds to wait for the gateway's health check (120)",
    )
    add_run_arguments(p)
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(ALL_SYSTEMS)
    if unknown or not args.systems:
        p.error(f"unknown systems {sorted(unknown)}; choose from {','.join(ALL_SYSTEMS)}")
    if args.connections < 1 or args.threads < 1 or args.objects < 1 or args.large_repeat < 1:
        p.error("--connections, --threads, --objects and --large-repeat must be positive")
    if not (0 < args.duration <= 600 and 0 <= args.warmup <= 600 and args.large_timeout > 0):
        p.error("--duration must be in (0, 600], --warmup in [0, 600], --large-timeout > 0")
    if any("=" not in item for item in args.gateway_env):
        p.error("--gateway-env takes KEY=VALUE")
    return args


@contextmanager
def run_dir(args: argparse.Namespace) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="s3-bench-", dir=args.tmp_dir))
    try:
        yield path
    finally:
        if args.keep_tmp:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def run_config(args: argparse.Namespace, hidden: Iterable[str]) -> dict[str, Any]:
    """The run's options for the record, without the ``hidden`` ones (paths, secrets)."""
    return {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in hidden
    }


def write_results(results_dir: Path, name: str, doc: dict[str, Any], md: list[str]) -> None:
    """Writes ``doc`` as <name>.json and ``md`` (then the doc's problems and notes, if it has
    any) as <name>.md in ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / name
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    md = [*md, "", *(f"- PROBLEM {p}" for p in doc.get("problems", []))]
    md += [f"- note: {n}" for n in doc.get("notes", [])]
    stem.with_suffix(".md").write_text("\n".join(md).rstrip() + "\n")
    print(f"\nwrote {name}.json and .md in {results_dir.name}/")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ["wrk", "curl"] + (["nginx"] if "nginx" in args.systems else []):
        find_tool(tool)
    if "moto" in args.systems:
        find_tool("moto_server")
    started = datetime.now(UTC)
    large = human_size(args.large_size)
    results: dict[str, Any] = {}

    with run_dir(args) as tmp:
        large_file = args.large_file or tmp / "large.bin"
        ensure_large_file(large_file, args.large_size)
        print("hashing the large file (and warming the page cache) ...", flush=True)
        rng_bodies = [os.urandom(SMALL_SIZE) for _ in range(args.objects)]
        objs = Objects(
            small_keys=[f"small/{i:05d}" for i in range(args.objects)],
            put_keys=[f"put/{i:05d}" for i in range(args.objects)],
            bodies=rng_bodies,
            large_file=large_file,
            large_size=args.large_size,
            large_md5=md5_file(large_file),
        )
        for name in args.systems:
            workdir = tmp / name
            workdir.mkdir()
            system = SYSTEM_CLASSES[name](workdir, args)
            res = results[name] = {"status": "ok", "problems": [], "notes": []}
            try:
                bench_system(system, objs, args, res)
            except FAILURES as e:
                res["status"] = "failed"
                record_failure(res, name, e)
            finally:
                print(f"stopping {name} ...", flush=True)
                res["notes"] += system.stop()

    targets = evaluate(results, large)
    header = ["figure", *args.systems]
    rows = figure_rows(results, args.systems, large, args.connections)
    trows = target_rows(targets)
    problems = [f"{s}: {p}" for s, r in results.items() for p in r.get("problems", [])]
    notes = [n for r in results.values() for n in r.get("notes", [])]
    if busy := busy_note(results, args.other_cpu_warn):
        notes.append(busy)

    print()
    print(text_table(header, rows))
    print()
    print(text_table(["target", "value", "goal", "result", "from"], trows))
    for p in problems:
        print(f"PROBLEM {p}")
    for n in notes:
        print(f"note: {n}")

    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    env = environment(args)
    config = run_config(
        args, ("database_url", "large_file", "tmp_dir", "results_dir", "gateway_env")
    )
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "command": command,
        "config": config,
        "environment": env,
        "systems": results,
        "targets": [dataclasses.asdict(t) for t in targets],
        "problems": problems,
        "notes": notes,
    }
    md = [
        f"# Gateway benchmark, {doc['started']}",
        "",
        f"`{command}`",
        "",
        md_table(header, rows),
        "",
        md_table(["target", "value", "goal", "result", "from"], trows),
        "",
        f"CPU used during each measurement, in cores ({os.cpu_count()} = the whole machine):",
        "",
        md_table(
            ["system", "workload", "server", "its Postgres", "load generator", "kernel", "other"],
            cpu_rows(results, args.systems),
        ),
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
    ]
    write_results(args.results_dir, started.strftime("%Y%m%dT%H%M%SZ"), doc, md)

    if problems:
        print("RESULT: INVALID (see PROBLEM lines; those figures must not be used)")
        return 1
    if any(t.result == "fail" for t in targets):
        print("RESULT: figures valid, some targets FAIL")
        return 2
    print("RESULT: figures valid, no target fails")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
