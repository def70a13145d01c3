"""Run moto's server in this process, with Step Functions executing state machines for real."""
from __future__ import annotations

import os
import socket

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """moto in a thread on 127.0.0.1. ``MOTO_PORT`` must be this process's, so Step Functions' service
    integrations (dynamodb, sqs) call back into this same server."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> "MotoServer":
        from moto.server import ThreadedMotoServer

        from local import dynamodb_atomic, kms_digest, s3_post_policy, s3_presigned_get

        dynamodb_atomic.install()  # one request at a time per table item, as DynamoDB applies them
        kms_digest.install()  # AWS KMS's DIGEST signing, which moto lacks (the treasury key signs tx digests)
        s3_post_policy.install()  # S3's check of a POST upload's signed policy, which moto skips (upload links)
        s3_presigned_get.install()  # S3's check of a presigned GET's SigV4 query signature, which moto skips
        os.environ["MOTO_PORT"] = str(self.port)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.configure()
        return self

    def configure(self) -> None:
        requests.post(
            f"{self.endpoint}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": True}},
            timeout=10,
        ).raise_for_status()

    def reset(self) -> None:
        """Forget every resource and item (between tests)."""
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        self.configure()

    def stop(self) -> None:
        if self._server:
            self._server.stop()
            self._server = None
