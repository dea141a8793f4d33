"""A real S3-protocol server on loopback (moto's standalone server), for the tests and
``bench/scaling.py``."""

from __future__ import annotations

import socket
import threading
from typing import Any


def atomic_conditional_puts() -> None:
    """moto checks a PUT's ``If-None-Match`` / ``If-Match`` and then writes, with no
    lock between: two racing writers can both pass the check (seen: 2 of 32 racing
    ``If-Match`` writers won). S3 makes check and write one atomic step, which is what
    Delta commits and the maintenance lease rely on; one lock around moto's PUT handler
    makes the emulator do the same."""
    from moto.s3.responses import S3Response

    original = S3Response.put_object
    if getattr(original, "istore_atomic", False):
        return
    lock = threading.Lock()

    def put_object(self: Any) -> Any:
        with lock:
            return original(self)

    put_object.istore_atomic = True  # type: ignore[attr-defined]
    S3Response.put_object = put_object  # type: ignore[method-assign]


def start_s3(*buckets: str) -> tuple[Any, dict[str, str]]:
    """Start moto's S3 server on a free 127.0.0.1 port with ``buckets`` created, its
    conditional writes atomic as on S3. Returns the server (``.stop()`` it) and the
    environment a client needs."""
    from moto.server import ThreadedMotoServer

    atomic_conditional_puts()

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
