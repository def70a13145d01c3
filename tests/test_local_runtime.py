"""The local runtime invokes handlers the way API Gateway, SQS and EventBridge do, from a template alone.

A small throwaway template (written under tmp_path, with its own handler folders) drives the real
``LocalRuntime`` against the session's moto server, so redrive and dead-lettering are moto's own behaviour.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import requests

from local.moto_server import free_port
from local.provision import provision
from local.runtime import LocalRuntime, RuntimeOptions
from local.template import LocalTemplate

FAKE_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  RecordDir: {Type: String, Default: /nonexistent}
Globals:
  Function:
    Runtime: python3.11
    Handler: app.lambda_handler
    Timeout: 5
    MemorySize: 256
    Environment:
      Variables:
        RECORD_DIR: !Ref RecordDir
        WORK_QUEUE_URL: !Ref WorkQueue
Resources:
  ApiFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/api/
      Events:
        Item: {Type: Api, Properties: {Path: "/items/{item_id}", Method: get}}
        Files: {Type: Api, Properties: {Path: "/files/{proxy+}", Method: any}}
        Slow: {Type: Api, Properties: {Path: /slow, Method: get}}
  OtherFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/other/
      Events:
        Other: {Type: Api, Properties: {Path: /other, Method: get}}
  ThrottledApi:
    Type: AWS::Serverless::Api
    Properties:
      StageName: local
      MethodSettings:
        - {ResourcePath: "/*", HttpMethod: "*", ThrottlingBurstLimit: 3, ThrottlingRateLimit: 2}
  ThrottledFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/other/
      Events:
        Limited: {Type: Api, Properties: {RestApiId: !Ref ThrottledApi, Path: /limited, Method: get}}
  SleepyFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/sleepy/
      Timeout: 1
      Events:
        Sleep: {Type: Api, Properties: {Path: /sleepy, Method: get}}
  SerialFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/serial/
      ReservedConcurrentExecutions: 1
      Events:
        Serial: {Type: Api, Properties: {Path: /serial, Method: get}}
  IsolatedFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/isolated/
      Events:
        Isolated: {Type: Api, Properties: {Path: "/isolated/{n}", Method: get}}
  MissingFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/missing/
      Events:
        Missing: {Type: Api, Properties: {Path: /missing, Method: get}}
        Tick: {Type: Schedule, Properties: {Schedule: rate(1 minute)}}
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/worker/
      Events:
        Work:
          Type: SQS
          Properties: {Queue: !GetAtt WorkQueue.Arn, BatchSize: 5, FunctionResponseTypes: [ReportBatchItemFailures]}
  StrictWorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/strict/
      Events:
        Work:
          Type: SQS
          Properties: {Queue: !GetAtt StrictQueue.Arn, BatchSize: 10}
  TickFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/tick/
      Events:
        Every: {Type: Schedule, Properties: {Schedule: rate(5 minutes)}}
  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
      RedrivePolicy: {deadLetterTargetArn: !GetAtt WorkDeadLetterQueue.Arn, maxReceiveCount: 2}
  WorkDeadLetterQueue:
    Type: AWS::SQS::Queue
  StrictQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
      RedrivePolicy: {deadLetterTargetArn: !GetAtt StrictDeadLetterQueue.Arn, maxReceiveCount: 2}
  StrictDeadLetterQueue:
    Type: AWS::SQS::Queue
"""

RECORDER = '''
import json, os, threading
_lock = threading.Lock()

def record(name, payload):
    with _lock, open(os.path.join(os.environ["RECORD_DIR"], name + ".jsonl"), "a") as handle:
        handle.write(json.dumps(payload) + "\\n")
'''

HANDLERS = {
    "api": RECORDER + '''
import base64, sys, time
NAME = "api"

def lambda_handler(event, context):
    if event["resource"] == "/slow":
        time.sleep(1.5)
        return {"statusCode": 200, "body": "slow"}
    if event["resource"] == "/files/{proxy+}":
        return {"statusCode": 201, "headers": {"Content-Type": "application/octet-stream"},
                "body": event["body"] if event["isBase64Encoded"] else base64.b64encode(event["body"].encode()).decode(),
                "isBase64Encoded": True, "multiValueHeaders": {"X-Parts": event["pathParameters"]["proxy"].split("/")}}
    if event["pathParameters"]["item_id"] == "boom":
        raise RuntimeError("handler failure")
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps({
        "event": event, "module": __name__, "name": NAME, "record_dir": os.environ["RECORD_DIR"],
        "function_dir_on_path": any(p.endswith("functions/api") or p.endswith("functions/api/") for p in sys.path),
        "context": {"function_name": context.function_name, "memory": context.memory_limit_in_mb,
                    "arn": context.invoked_function_arn, "request_id": context.aws_request_id,
                    "remaining": context.get_remaining_time_in_millis()}})}
''',
    "other": '''
import json
NAME = "other"

def lambda_handler(event, context):
    return {"statusCode": 200, "body": json.dumps({"module": __name__, "name": NAME})}
''',
    "sleepy": '''
import time

def lambda_handler(event, context):
    time.sleep(3)
    return {"statusCode": 200, "body": "too late"}
''',
    "worker": RECORDER + '''
def lambda_handler(event, context):
    failures = []
    for item in event["Records"]:
        record("worker", item)
        if item["body"].startswith("fail"):
            failures.append({"itemIdentifier": item["messageId"]})
    return {"batchItemFailures": failures}
''',
    "strict": RECORDER + '''
def lambda_handler(event, context):
    for item in event["Records"]:
        record("strict", item)
    if any(item["body"] == "boom" for item in event["Records"]):
        raise ValueError("one bad message fails the whole batch without ReportBatchItemFailures")
''',
    "serial": RECORDER + '''
import time

def lambda_handler(event, context):
    started = time.monotonic()
    time.sleep(0.3)
    record("serial", {"start": started, "end": time.monotonic(), "remaining": context.get_remaining_time_in_millis()})
    return {"statusCode": 200, "body": "done"}
''',
    "isolated": '''
import time
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

app = APIGatewayRestResolver()  # keeps "the current event" where Powertools keeps it
CURRENT = {}  # and module-level state of our own

@app.get("/isolated/<n>")
def isolated(n):
    CURRENT["n"] = n
    time.sleep(0.3)
    return {"path_n": n, "module_n": CURRENT["n"], "event_n": app.current_event.get_header_value("X-N")}

def lambda_handler(event, context):
    return app.resolve(event, context)
''',
    "tick": RECORDER + '''
def lambda_handler(event, context):
    record("tick", {"event": event, "remaining": context.get_remaining_time_in_millis()})
''',
}


@pytest.fixture
def fake_template(tmp_path: Path) -> LocalTemplate:
    (tmp_path / "template.yaml").write_text(FAKE_TEMPLATE)
    for name, source in HANDLERS.items():
        folder = tmp_path / "functions" / name
        folder.mkdir(parents=True)
        (folder / "app.py").write_text(source)
    (tmp_path / "records").mkdir()
    return LocalTemplate(parameters={"RecordDir": str(tmp_path / "records")}, path=tmp_path / "template.yaml")


@pytest.fixture
def runtime(aws, fake_template):
    provision(fake_template, aws.endpoint, bot_token="unused:token", webhook_secret="unused")
    return LocalRuntime(fake_template, aws.endpoint, RuntimeOptions(port=free_port(), fast_schedules=0.3))


def records(template: LocalTemplate, name: str) -> list[dict]:
    path = Path(template.parameters["RecordDir"]) / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_requests_become_proxy_events_for_the_templates_routes(runtime, fake_template):
    with runtime:
        response = requests.get(f"{runtime.url}/items/42?x=1&x=2&y=", headers={"X-Test": "yes"}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        event, context = body["event"], body["context"]
        assert event["resource"] == "/items/{item_id}"
        assert event["path"] == "/items/42"
        assert event["httpMethod"] == "GET"
        assert event["pathParameters"] == {"item_id": "42"}
        assert event["queryStringParameters"] == {"x": "2", "y": ""}
        assert event["multiValueQueryStringParameters"]["x"] == ["1", "2"]
        assert event["headers"]["X-Test"] == "yes"
        assert event["multiValueHeaders"]["X-Test"] == ["yes"]
        assert event["body"] is None and event["isBase64Encoded"] is False
        request_context = event["requestContext"]
        assert request_context["stage"] == "local" and request_context["requestId"]
        assert request_context["identity"]["sourceIp"] == "127.0.0.1"
        assert request_context["resourcePath"] == "/items/{item_id}"
        # the context is Lambda's, sized and timed from the template
        assert context["function_name"] == fake_template.physical_name("ApiFunction")
        assert context["memory"] == 256
        assert context["arn"].endswith(":function:" + fake_template.physical_name("ApiFunction"))
        assert 0 < context["remaining"] <= 5000
        # the environment is the template's, resolved
        assert body["record_dir"] == fake_template.parameters["RecordDir"]
        assert not body["function_dir_on_path"]

        # both handlers are app.py, yet each is its own module
        other = requests.get(f"{runtime.url}/other", timeout=10).json()
        assert (body["name"], other["name"]) == ("api", "other")
        assert body["module"] != other["module"]


def test_binary_bodies_greedy_paths_errors_and_limits(runtime):
    with runtime:
        payload = bytes(range(256)) * 4  # not UTF-8: travels base64-encoded both ways
        response = requests.post(f"{runtime.url}/files/a/b/c.bin", data=payload,
                                 headers={"Content-Type": "application/octet-stream"}, timeout=10)
        assert response.status_code == 201
        assert response.content == payload
        assert response.headers["X-Parts"] == "a, b, c.bin"

        # API Gateway REST: an unknown resource and a method the resource does not declare are both 403
        for method, path in (("GET", "/nowhere"), ("POST", "/other"), ("TRACE", "/other"), ("QUERY", "/nowhere")):
            unknown = requests.request(method, f"{runtime.url}{path}", timeout=10)
            assert unknown.status_code == 403, (method, path, unknown.status_code)
            assert unknown.json() == {"message": "Missing Authentication Token"}, (method, path)
            assert unknown.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
        missing = requests.get(f"{runtime.url}/missing", timeout=10)
        assert missing.status_code == 501 and "MissingFunction" in missing.json()["message"]
        assert "MissingFunction" in runtime.skipped
        failing = requests.get(f"{runtime.url}/items/boom", timeout=10)
        assert failing.status_code == 502 and failing.json() == {"message": "Internal server error"}

        started = time.monotonic()
        timed_out = requests.get(f"{runtime.url}/sleepy", timeout=10)
        assert timed_out.status_code == 504
        assert time.monotonic() - started < 2.8  # the function's 1 s Timeout, not the handler's 3 s sleep

        # over Lambda's 6 MB payload: refused from the Content-Length alone, the body is never read
        host, port = runtime.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(b"POST /files/big HTTP/1.1\r\nHost: x\r\nContent-Length: 7000000\r\n\r\npartial")
            assert raw.recv(200).startswith(b"HTTP/1.1 413")


def test_stage_throttling_from_the_template_answers_429_then_recovers(runtime):
    with runtime:
        statuses = [requests.get(f"{runtime.url}/limited", timeout=10).status_code for _ in range(8)]
        assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]  # burst 3
        assert requests.get(f"{runtime.url}/other", timeout=10).status_code == 200  # another API: unthrottled
        time.sleep(0.6)  # refills at 2 requests/s
        assert requests.get(f"{runtime.url}/limited", timeout=10).status_code == 200


def test_a_slow_request_does_not_block_others(runtime):
    with runtime:
        finished: dict[str, float] = {}

        def slow() -> None:
            requests.get(f"{runtime.url}/slow", timeout=10)
            finished["slow"] = time.monotonic()

        worker = threading.Thread(target=slow)
        worker.start()
        time.sleep(0.2)
        assert requests.get(f"{runtime.url}/items/1", timeout=10).status_code == 200
        finished["fast"] = time.monotonic()
        worker.join()
        assert finished["fast"] < finished["slow"]


def test_concurrent_invocations_get_their_own_execution_environments(runtime):
    with runtime:
        def ask(n: str) -> dict:
            return requests.get(f"{runtime.url}/isolated/{n}", headers={"X-N": n}, timeout=10).json()

        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(ask, [str(n) for n in range(12)]))
        # nobody saw another request's module state or Powertools' "current event"
        assert answers == [{"path_n": str(n), "module_n": str(n), "event_n": str(n)} for n in range(12)]
        isolated = runtime.functions["IsolatedFunction"]
        assert 2 <= isolated.environments <= 6
        before = isolated.environments
        for n in range(3):  # one at a time: warm environments are reused, no new cold starts
            assert ask(str(n))["event_n"] == str(n)
        assert isolated.environments == before


def test_reserved_concurrency_runs_invocations_one_at_a_time(runtime, fake_template):
    with runtime:
        callers = [threading.Thread(target=requests.get, args=(f"{runtime.url}/serial",), kwargs={"timeout": 10})
                   for _ in range(3)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
    runs = sorted(records(fake_template, "serial"), key=lambda run: run["start"])
    assert len(runs) == 3
    assert all(earlier["end"] <= later["start"] for earlier, later in zip(runs, runs[1:]))
    assert all(run["remaining"] > 4000 for run in runs)  # waiting for the slot did not eat the Timeout


def test_sqs_batches_delete_only_successes_and_failures_reach_the_dead_letter_queue(runtime, fake_template, aws):
    sqs = boto3.client("sqs", endpoint_url=aws.endpoint)
    work_url = fake_template.queue_url("WorkQueue", aws.endpoint)
    strict_url = fake_template.queue_url("StrictQueue", aws.endpoint)
    for body in ("ok-1", "fail-2", "ok-3", "fail-4"):
        sqs.send_message(QueueUrl=work_url, MessageBody=body)
    for body in ("fine", "boom"):
        sqs.send_message(QueueUrl=strict_url, MessageBody=body)

    def dead_letters(queue_id: str) -> list[str]:
        url = fake_template.queue_url(queue_id, aws.endpoint)
        found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
        return sorted(message["Body"] for message in found)

    with runtime:
        wait_until(lambda: len(dead_letters("WorkDeadLetterQueue")) == 2 and
                   len(dead_letters("StrictDeadLetterQueue")) == 2, timeout=15)

    assert dead_letters("WorkDeadLetterQueue") == ["fail-2", "fail-4"]
    seen = records(fake_template, "worker")
    bodies = [item["body"] for item in seen]
    assert bodies.count("ok-1") == 1 and bodies.count("ok-3") == 1  # deleted after the first batch
    assert bodies.count("fail-2") == 2 and bodies.count("fail-4") == 2  # retried up to maxReceiveCount
    first = next(item for item in seen if item["body"] == "ok-1")
    assert first["eventSource"] == "aws:sqs"
    assert first["eventSourceARN"] == fake_template.arn("WorkQueue")
    assert first["attributes"]["ApproximateReceiveCount"] == "1"
    assert first["receiptHandle"] and first["messageId"] and first["md5OfBody"]
    retried = [item["attributes"]["ApproximateReceiveCount"] for item in seen if item["body"] == "fail-2"]
    assert retried == ["1", "2"]
    work = sqs.get_queue_attributes(QueueUrl=work_url, AttributeNames=["All"])["Attributes"]
    assert work["ApproximateNumberOfMessages"] == "0" and work["ApproximateNumberOfMessagesNotVisible"] == "0"

    # a raised exception fails the whole batch: the good message was retried and dead-lettered too
    assert dead_letters("StrictDeadLetterQueue") == ["boom", "fine"]
    assert [item["body"] for item in records(fake_template, "strict")].count("fine") == 2


def test_schedules_fire_with_eventbridge_events_and_everything_stops(runtime, fake_template):
    with runtime:
        wait_until(lambda: len(records(fake_template, "tick")) >= 3, timeout=5)
    fired = records(fake_template, "tick")
    event = fired[0]["event"]
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["resources"][0].startswith("arn:aws:events:")
    assert 0 < fired[0]["remaining"] <= 5000
    # stopped: no poller, timer or server thread is left, the port is closed, the environment is restored
    alive = [t.name for t in threading.enumerate() if t.name.startswith(("depu-local-api", "depu-local-sqs",
                                                                          "depu-local-schedule"))]
    assert alive == []
    host, port = runtime.url.removeprefix("http://").split(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1)
    import os
    assert "RECORD_DIR" not in os.environ
    count = len(records(fake_template, "tick"))
    time.sleep(0.7)
    assert len(records(fake_template, "tick")) == count
