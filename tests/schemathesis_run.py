"""schemathesis' command line against one function of the template, served by the local runtime: the contract
tests of the agent API and the public API share this one way of running it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from local.moto_server import free_port

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def run_against(aws, function_name: str, document: Path, token: str, workdir: Path, *, job_id: str, seed: int,
                max_examples: int, timeout: int, extra: tuple[str, ...] = ()) -> str:
    """Serve ``function_name`` alone, run schemathesis against ``document`` with ``token``, stop; returns its
    output and fails the test on any violation. ``job_id`` is an id that exists, for ``{job_id}`` paths."""
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    (workdir / "schemathesis.toml").write_text(f'[parameters]\n"path.job_id" = "{job_id}"\n')
    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port()))
    runtime.functions = {name: fn for name, fn in runtime.functions.items() if name == function_name}
    runtime.start()
    # The stdlib server under the local runtime answers methods it has no do_X for (TRACE, QUERY, ...) itself,
    # with an HTML 501, before any route or handler is reached (pinned by a strict xfail in
    # test_abuse_floods.py). API Gateway sends every method to the route, so send them to it here too: what
    # is fuzzed is the handler's contract, not http.server's.
    handler_class = runtime._server.RequestHandlerClass

    def any_method(self, name: str):
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    handler_class.__getattr__ = any_method
    try:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "NO_COLOR": "1"}
        command = [
            sys.executable, "-m", "schemathesis.cli", "run", str(document), "--url", runtime.url,
            "-H", f"Authorization: Bearer {token}", "--checks", CHECKS,
            "--phases", os.environ.get("DEPU_SCHEMATHESIS_PHASES", "examples,fuzzing"),
            "--max-examples", str(max_examples), "--workers", "1", "--seed", str(seed),
            "--request-timeout", "30", "--generation-database", "none", "--no-color", *extra,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)
    finally:
        runtime.stop()
    output = done.stdout + done.stderr
    print(output[-6000:])
    assert done.returncode == 0, output[-6000:]
    return output
