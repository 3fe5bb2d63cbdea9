#!/bin/sh
# Installs what bench/run.py needs beyond the project's venv (Debian/Ubuntu, as root).
set -eu
missing=""
for tool in nginx wrk curl; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    apt-get update
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
# The S3 peer and the client that prepares buckets and pre-signs URLs.
python="${PYTHON:-.venv/bin/python}"
"$python" -c 'import boto3, moto.server' 2>/dev/null || "$python" -m pip install boto3 'moto[server]'
echo "bench prerequisites present"
