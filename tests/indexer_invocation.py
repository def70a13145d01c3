"""One invocation of the indexer Lambda handler in its own process, as the every-minute schedule starts it.

A test starts it with ``IndexerInvocation(seconds)``: the handler gets a context with that much time left (it
keeps 10 s back), follows the chain head in the child process, with its own boto3 clients, while the test
talks to the bot in the test process, the way the webhook and indexer Lambdas run side by side. The child
reads the same environment (moto endpoint, table and queue names, ``CHAIN_*``) and prints the handler's
outcome as JSON when the invocation ends.

    python tests/indexer_invocation.py SECONDS
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class IndexerInvocation:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "IndexerInvocation":
        paths = [str(ROOT), str(ROOT / "layers" / "depu"), str(ROOT / "tests")]
        env = os.environ | {"PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])}
        self.log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would stall the child
        self.process = subprocess.Popen([sys.executable, __file__, str(self.seconds)], env=env, cwd=ROOT,
                                        stdout=self.log, stderr=subprocess.STDOUT, text=True)
        return self

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __exit__(self, *exc: object) -> None:
        if self.running:
            self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def _invoke(seconds: float) -> None:
    from telegram_harness import FakeLambdaContext, load_function

    class Context(FakeLambdaContext):
        function_name = "depu-IndexerFunction"

        def __init__(self) -> None:
            super().__init__()
            import time

            self.ends = time.monotonic() + seconds

        def get_remaining_time_in_millis(self) -> int:
            import time

            return int((self.ends - time.monotonic()) * 1000)

    outcome = load_function("indexer").lambda_handler({}, Context())
    print(json.dumps(outcome))


if __name__ == "__main__":
    _invoke(float(sys.argv[1]))
