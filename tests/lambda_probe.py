"""Runs one handler the way Lambda does, in a clean interpreter: ``python -I -S tests/lambda_probe.py``.

``-I -S`` leaves only the standard library on ``sys.path`` (no venv, no site-packages, no PYTHONPATH); the
request on stdin names the folders Lambda would search (the function's, its layers', the runtime's), the
handler, the event, an optional snippet to run afterwards in the same interpreter, and the remaining time.
It prints one JSON line: the handler's result (or the exception, with its type), and where every imported
top-level module came from, so the caller can see that nothing came from outside those folders.
"""
import importlib
import json
import sys
import traceback
import uuid


class Context:
    """What Lambda passes as ``context`` (the attributes Powertools reads)."""

    function_version = "$LATEST"
    memory_limit_in_mb = 512
    log_group_name = "/aws/lambda/depu"
    log_stream_name = "probe"

    def __init__(self, name: str, remaining_ms: int) -> None:
        self.function_name = name
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self._remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining_ms


def origins() -> dict[str, str]:
    found = {}
    for name, module in list(sys.modules.items()):
        if "." in name or name in ("__main__", "__mp_main__"):  # this probe itself
            continue
        location = getattr(module, "__file__", None) or ""
        found[name] = location
    return found


def main() -> None:
    request = json.loads(sys.stdin.read())
    answer = {"stdlib": list(sys.path)}  # all that -I -S leaves
    sys.path[:0] = request["path"]
    module_name, function_name = request["handler"].rsplit(".", 1)
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        answer["result"] = handler(request["event"], Context(request["function"], request["remaining_ms"]))
        if request.get("after"):
            scope = {}
            exec(request["after"], scope)  # noqa: S102 - the test's own snippet
            answer["after"] = scope.get("result")
    except BaseException as error:  # noqa: BLE001 - reported to the caller, who fails the test
        answer["error"] = {"type": type(error).__name__, "message": str(error), "trace": traceback.format_exc()}
    answer["modules"] = origins()
    print(json.dumps(answer, default=str))


if __name__ == "__main__":
    main()
