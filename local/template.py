"""Read template.yaml and resolve it into concrete local resources.

The local stack and the tests never declare a table, queue, route, schedule or state machine of their own:
they ask this module, so local and cloud cannot drift.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
LOCAL_PREFIX = "depu"
LOCAL_STAGE = "local"


@lru_cache(maxsize=4)
def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """template.yaml as CloudFormation reads it (short tags such as ``!Ref`` in their long form), by cfn-lint's
    decoder: the same reading ``make lint`` checks."""
    from cfnlint.decode import cfn_yaml  # imported when needed: a second or two, and ROOT users need none

    return cfn_yaml.load(str(path))


@dataclass
class Route:
    """One API Gateway route of a function, as SAM declares it."""

    function: str
    path: str
    method: str
    pattern: re.Pattern[str] = field(repr=False)
    api: str | None = None  # the AWS::Serverless::Api it belongs to (RestApiId), None: SAM's implicit API

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method.upper()):
            return None
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None


def _route_pattern(path: str) -> re.Pattern[str]:
    regex = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("+}"):
            regex += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            regex += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile(regex)


@dataclass
class Function:
    logical_id: str
    code_dir: Path
    handler: str
    timeout: int
    environment: dict[str, str]
    routes: list[Route]
    queues: list[tuple[str, int]]  # (queue logical id, batch size)
    schedules: list[float]  # periods in seconds
    memory_size: int = 128
    reserved_concurrency: int | None = None
    # queues whose event source mapping has FunctionResponseTypes [ReportBatchItemFailures]
    partial_batch_queues: set[str] = field(default_factory=set)


class LocalTemplate:
    """template.yaml with every intrinsic resolved to the names the local stack uses."""

    def __init__(self, parameters: dict[str, str] | None = None, path: Path = TEMPLATE_PATH):
        self.raw = load_template(path)
        self._globals: Any = None  # SAM's Globals of this template, made on first use
        self.root = path.parent  # CodeUri and DefinitionUri are relative to the template's folder
        self.resources: dict[str, dict[str, Any]] = self.raw["Resources"]
        self.parameters = {name: str(spec.get("Default", "")) for name, spec in self.raw.get("Parameters", {}).items()}
        self.parameters["Stage"] = LOCAL_STAGE
        self.parameters.update(parameters or {})
        if "AgentSigningPublicKey" in self.parameters and not self.parameters["AgentSigningPublicKey"]:
            from local import signing_key  # the key /provider pins: the local stack's own (local/signing_key.py)

            self.parameters["AgentSigningPublicKey"] = signing_key.load_or_create().public_key

    # ------------------------------------------------------------------ names
    def physical_name(self, logical_id: str) -> str:
        kind = self.resources[logical_id]["Type"]
        props = self.resources[logical_id].get("Properties", {})
        if kind == "AWS::SecretsManager::Secret" and "Name" in props:
            return self.resolve(props["Name"])
        if kind == "AWS::S3::Bucket":
            return f"{LOCAL_PREFIX}-{logical_id}".lower()
        if kind == "AWS::SQS::Queue" and str(props.get("FifoQueue", "")).lower() == "true":
            return f"{LOCAL_PREFIX}-{logical_id}.fifo"  # as CloudFormation names a FIFO queue
        return f"{LOCAL_PREFIX}-{logical_id}"

    def queue_url(self, logical_id: str, endpoint: str) -> str:
        return f"{endpoint.rstrip('/')}/{ACCOUNT_ID}/{self.physical_name(logical_id)}"

    def arn(self, logical_id: str) -> str:
        kind = self.resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        if kind == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"
        if kind == "AWS::DynamoDB::Table":
            return f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"
        if kind == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{name}"
        if kind in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
            return f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{name}"
        if kind == "AWS::SecretsManager::Secret":
            return name  # Secrets Manager accepts the name wherever it takes an ARN
        if kind == "AWS::Serverless::Function":
            return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
        return name

    # ------------------------------------------------------------------ intrinsics
    def resolve(self, value: Any, endpoint: str = "http://127.0.0.1:5000") -> Any:
        if isinstance(value, list):
            return [self.resolve(item, endpoint) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self._ref(arg, endpoint)
            if key == "Fn::GetAtt":
                return self._get_att(arg[0], arg[1], endpoint)
            if key == "Fn::Sub":
                return self._sub(arg, endpoint)
            if key == "Fn::If":
                condition, when_true, when_false = arg
                return self.resolve(when_true if self.condition(condition) else when_false, endpoint)
            if key == "Fn::Join":
                return arg[0].join(str(self.resolve(item, endpoint)) for item in arg[1])
        return {key: self.resolve(item, endpoint) for key, item in value.items()}

    def condition(self, name: str) -> bool:
        return bool(self._evaluate(self.raw.get("Conditions", {})[name]))

    def _evaluate(self, expr: Any) -> Any:
        if isinstance(expr, dict) and len(expr) == 1:
            (key, arg), = expr.items()
            if key == "Fn::Equals":
                return self._evaluate(arg[0]) == self._evaluate(arg[1])
            if key == "Fn::Not":
                return not self._evaluate(arg[0])
            if key == "Condition":
                return self.condition(arg)
        return self.resolve(expr)

    def _ref(self, name: str, endpoint: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        if name == "AWS::Region":
            return REGION
        if name == "AWS::AccountId":
            return ACCOUNT_ID
        kind = self.resources[name]["Type"]
        if kind == "AWS::SQS::Queue":
            return self.queue_url(name, endpoint)
        if kind in ("AWS::Serverless::StateMachine", "AWS::SNS::Topic", "AWS::SecretsManager::Secret"):
            return self.arn(name)
        return self.physical_name(name)

    def _get_att(self, name: str, attribute: str, endpoint: str) -> str:
        if attribute == "Arn":
            return self.arn(name)
        if attribute in ("QueueName", "Name"):
            return self.physical_name(name)
        if attribute == "QueueUrl":
            return self.queue_url(name, endpoint)
        raise KeyError(f"unsupported attribute {name}.{attribute}")

    def _sub(self, arg: Any, endpoint: str) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token in variables:
                return str(self.resolve(variables[token], endpoint))
            if "." in token:
                name, attribute = token.split(".", 1)
                return self._get_att(name, attribute, endpoint)
            return str(self._ref(token, endpoint))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    # ------------------------------------------------------------------ views
    def of_type(self, *kinds: str) -> dict[str, dict[str, Any]]:
        return {lid: res for lid, res in self.resources.items() if res["Type"] in kinds}

    def function_properties(self, logical_id: str) -> dict[str, Any]:
        """A function's properties with the template's Globals merged in, as SAM merges them."""
        if self._globals is None:
            from samtranslator.plugins.globals.globals import Globals

            self._globals = Globals(dict(self.raw))
        return self._globals.merge("AWS::Serverless::Function", dict(self.resources[logical_id].get("Properties", {})))

    def environment(self, endpoint: str = "http://127.0.0.1:5000", function: str | None = None) -> dict[str, str]:
        """Environment variables a function sees (Globals merged with its own), all resolved; without a
        function, those every function gets from Globals."""
        if function:
            props = self.function_properties(function)
        else:
            props = self.raw.get("Globals", {}).get("Function", {})
        env = props.get("Environment", {}).get("Variables", {})
        return {key: str(self.resolve(value, endpoint)) for key, value in env.items()}

    def functions(self, endpoint: str = "http://127.0.0.1:5000") -> dict[str, Function]:
        result = {}
        for logical_id in self.of_type("AWS::Serverless::Function"):
            props = self.function_properties(logical_id)
            routes, queues, schedules = [], [], []
            partial_batch_queues: set[str] = set()
            from samtranslator.model.eventsources import pull, push

            for event_id, event in props.get("Events", {}).items():
                source = _event_source(event_id, event)
                if isinstance(source, push.Api):
                    path, method = source.Path, source.Method.upper()
                    api = source.RestApiId.get("Ref") if isinstance(source.RestApiId, dict) else source.RestApiId
                    routes.append(Route(logical_id, path, method, _route_pattern(path), api))
                elif isinstance(source, pull.SQS):
                    queue_id = source.Queue["Fn::GetAtt"][0]
                    queues.append((queue_id, int(source.BatchSize or 10)))
                    if "ReportBatchItemFailures" in (source.FunctionResponseTypes or []):
                        partial_batch_queues.add(queue_id)
                elif isinstance(source, push.Schedule):
                    schedules.append(parse_rate(source.Schedule))
                elif event.get("Type") == "ScheduleV2":
                    schedules.append(parse_rate(event["Properties"]["ScheduleExpression"]))
            result[logical_id] = Function(
                logical_id=logical_id,
                code_dir=self.root / props["CodeUri"],
                handler=props.get("Handler", "app.lambda_handler"),
                timeout=int(props.get("Timeout", 3)),
                environment=self.environment(endpoint, logical_id),
                routes=routes,
                queues=queues,
                schedules=schedules,
                memory_size=int(props.get("MemorySize", 128)),
                reserved_concurrency=(
                    int(props["ReservedConcurrentExecutions"]) if "ReservedConcurrentExecutions" in props else None
                ),
                partial_batch_queues=partial_batch_queues,
            )
        return result

    def routes(self) -> list[Route]:
        return [route for function in self.functions().values() for route in function.routes]


IMPLICIT_API = "ServerlessRestApi"  # the API SAM creates for Api events that name none


def _event_source(event_id: str, event: dict[str, Any]) -> Any:
    """SAM's own model of one function event (Api, SQS, Schedule, ...), validated as ``sam validate`` would;
    None for kinds the local runtime does not run. Only SAM's event source models are imported (its whole
    function model costs seconds of import)."""
    from samtranslator.model import ResourceTypeResolver
    from samtranslator.model.eventsources import pull, push

    resolver = ResourceTypeResolver(pull, push)
    if not resolver.can_resolve(event):
        return None
    if event.get("Type") == "Api" and "RestApiId" not in event.get("Properties", {}):
        # what SAM's implicit-API plugin does before the events are read
        event = {**event, "Properties": {**event["Properties"], "RestApiId": {"Ref": IMPLICIT_API}}}
    return resolver.resolve_resource_type(event).from_dict(event_id, event)


def parse_rate(expression: str) -> float:
    """Seconds between runs of an EventBridge ``rate(N unit)`` expression."""
    found = re.fullmatch(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not found:
        raise ValueError(f"only rate() schedules run locally, got {expression!r}")
    amount, unit = int(found.group(1)), found.group(2).rstrip("s")
    return amount * {"minute": 60, "hour": 3600, "day": 86400}[unit]
