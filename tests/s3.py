"""A real S3 API on 127.0.0.1 for tests: moto's server, started by the test session and stopped
with it. Builds reach it through the standard AWS environment variables (AWS_ENDPOINT_URL, ...),
which subprocesses and Ray workers inherit."""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager

BUCKET = "synthfer-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_s3():
    """Yield the endpoint URL of a fresh moto S3 server with one bucket; env set while it runs."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on stderr
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(BUCKET)
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def objects(url: str) -> dict[str, bytes]:
    """Every object under an s3:// prefix, relative name -> bytes."""
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False)
    root = url.split("://", 1)[1].rstrip("/")
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}
