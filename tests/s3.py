"""A real S3-protocol server on loopback (moto's standalone server), for the tests and
``bench/scaling.py``."""

from __future__ import annotations

import socket
from typing import Any


def start_s3(*buckets: str) -> tuple[Any, dict[str, str]]:
    """Start moto's S3 server on a free 127.0.0.1 port with ``buckets`` created.
    Returns the server (``.stop()`` it) and the environment a client needs."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    for bucket in buckets:
        create_bucket(env, bucket)
    return server, env


def create_bucket(env: dict[str, str], bucket: str) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    client.create_bucket(Bucket=bucket)
