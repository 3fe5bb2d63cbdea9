# syntax=docker/dockerfile:1
#
#   docker build -t gateway .
#   docker run -p 9000:9000 -v gateway-data:/data gateway
#
# Without a configuration file the gateway serves on 0.0.0.0:9000 with an embedded Postgres
# and blobs under /data; the root credential is printed on the first start (or pass
# GATEWAY_ROOT_ACCESS_KEY / GATEWAY_ROOT_SECRET_KEY). With a file:
#   -v ./config.yaml:/etc/gateway/config.yaml:ro -e GATEWAY_CONFIG=/etc/gateway/config.yaml
# GATEWAY_LISTEN and GATEWAY_DATA_DIR below override the file's listen and data_dir.
# compose.yaml runs two of these behind a load balancer, on Postgres and MinIO (see README).

# Both stages must share the interpreter: the venv links to its python.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gateway
WORKDIR /src
COPY . .
# Every dependency ships manylinux wheels, so no compiler is needed here. The versions are
# constraints.txt's, the set the tests ran on (scripts/lock); only the runtime's are installed.
RUN /opt/gateway/bin/pip install --constraint constraints.txt .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_LISTEN=0.0.0.0:9000 \
    GATEWAY_DATA_DIR=/data
# tini as PID 1 forwards signals to the gateway and reaps the processes left to it: the
# embedded Postgres (started by pg_ctl, which exits) and the render workers of a killed
# gateway process. The gateway as PID 1 would leave them zombies. (`docker run --init` is the
# same without this package.)
# ffmpeg (with ffprobe) makes the posters of videos (variant presets with frame:).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini ffmpeg \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/gateway /opt/gateway
# Postgres refuses to run as root, and the gateway needs no privilege: a fixed uid so
# bind-mounted data directories can be chowned to it (10001:10001).
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --create-home --home-dir /home/gateway gateway \
    && mkdir /data \
    && chown gateway:gateway /data
# Created and owned before VOLUME, so a fresh named volume inherits the ownership.
VOLUME /data
WORKDIR /data
USER gateway
EXPOSE 9000
# 503 (database unreachable) and connection errors both make urlopen raise -> unhealthy.
# Behind TLS or on another address, set GATEWAY_HEALTH_URL.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('GATEWAY_LISTEN', ':9000').rpartition(':')[2]; urllib.request.urlopen(os.environ.get('GATEWAY_HEALTH_URL', f'http://127.0.0.1:{port}/_gateway/health'), timeout=4)"]
ENTRYPOINT ["tini", "--", "gateway"]
CMD ["serve"]
