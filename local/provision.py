"""Create template.yaml's tables, queues, bucket, secrets and state machines in a (moto) AWS endpoint."""
from __future__ import annotations

import json
import secrets as _secrets
from typing import Any

import boto3

from local.template import ACCOUNT_ID, REGION, ROOT, LocalTemplate

_TABLE_KEYS = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "BillingMode")


def client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def provision(template: LocalTemplate, endpoint: str, *, bot_token: str, webhook_secret: str) -> None:
    """Idempotently create every stateful resource of the template at ``endpoint``."""
    _tables(template, endpoint)
    _queues(template, endpoint)
    _buckets(template, endpoint)
    _secrets_(template, endpoint, bot_token=bot_token, webhook_secret=webhook_secret)
    _state_machines(template, endpoint)
    _kms_keys(template, endpoint)


def _tables(template: LocalTemplate, endpoint: str) -> None:
    dynamodb = client("dynamodb", endpoint)
    existing = set(dynamodb.list_tables()["TableNames"])
    for logical_id, resource in template.of_type("AWS::DynamoDB::Table").items():
        name = template.physical_name(logical_id)
        if name in existing:
            continue
        props = template.resolve(resource["Properties"], endpoint)
        spec = {key: props[key] for key in _TABLE_KEYS if key in props}
        dynamodb.create_table(TableName=name, **spec)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


def _queues(template: LocalTemplate, endpoint: str) -> None:
    sqs = client("sqs", endpoint)
    queues = template.of_type("AWS::SQS::Queue")
    # dead-letter queues first, so a redrive policy always names a queue that exists
    ordered = sorted(queues, key=lambda lid: "RedrivePolicy" in queues[lid].get("Properties", {}))
    for logical_id in ordered:
        props = template.resolve(queues[logical_id].get("Properties", {}), endpoint)
        attributes: dict[str, str] = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds"):
            if key in props:
                attributes[key] = str(props[key])
        for key in ("FifoQueue", "ContentBasedDeduplication"):  # booleans, as the SQS API spells them
            if key in props:
                attributes[key] = str(props[key]).lower()
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        sqs.create_queue(QueueName=template.physical_name(logical_id), Attributes=attributes)


def _buckets(template: LocalTemplate, endpoint: str) -> None:
    s3 = client("s3", endpoint)
    for logical_id in template.of_type("AWS::S3::Bucket"):
        name = template.physical_name(logical_id)
        try:
            s3.create_bucket(Bucket=name)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        rules = template.resources[logical_id].get("Properties", {}).get("LifecycleConfiguration", {}).get("Rules")
        if rules:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(rule) for rule in rules]})
        cors = template.resolve(template.resources[logical_id].get("Properties", {}).get("CorsConfiguration", {}),
                                endpoint).get("CorsRules")
        if cors:  # the Mini App posts large input files to the bucket from the API's origin
            s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [_cors_rule(rule) for rule in cors]})


def _cors_rule(rule: dict) -> dict:
    """A template CorsRules entry in the S3 API's shape."""
    converted = {key: list(rule[key]) for key in ("AllowedMethods", "AllowedOrigins", "AllowedHeaders",
                                                   "ExposedHeaders") if key in rule}
    if "MaxAge" in rule:
        converted["MaxAgeSeconds"] = int(rule["MaxAge"])
    return converted


def _lifecycle_rule(rule: dict) -> dict:
    """A template LifecycleConfiguration rule in the S3 API's shape (the fields template.yaml uses)."""
    converted: dict = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        converted["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        converted["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}
    return converted


def _secrets_(template: LocalTemplate, endpoint: str, *, bot_token: str, webhook_secret: str) -> None:
    manager = client("secretsmanager", endpoint)
    values = {"TelegramBotTokenSecret": bot_token, "TelegramWebhookSecret": webhook_secret}
    for logical_id in template.of_type("AWS::SecretsManager::Secret"):
        name = template.physical_name(logical_id)
        value = values.get(logical_id) or _secrets.token_urlsafe(32)
        try:
            manager.create_secret(Name=name, SecretString=value)
        except manager.exceptions.ResourceExistsException:
            manager.put_secret_value(SecretId=name, SecretString=value)


def _state_machines(template: LocalTemplate, endpoint: str) -> None:
    states = client("stepfunctions", endpoint)
    existing = {machine["name"] for machine in states.list_state_machines()["stateMachines"]}
    for logical_id, resource in template.of_type("AWS::Serverless::StateMachine").items():
        name = template.physical_name(logical_id)
        props = resource["Properties"]
        definition_path = getattr(template, "root", ROOT) / props["DefinitionUri"]
        if name in existing or not definition_path.exists():
            continue
        definition = definition_path.read_text(encoding="utf-8")
        for key, value in template.resolve(props.get("DefinitionSubstitutions", {}), endpoint).items():
            definition = definition.replace("${" + key + "}", str(value))
        states.create_state_machine(
            name=name,
            definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{name}-role",
        )


def _kms_keys(template: LocalTemplate, endpoint: str) -> None:
    """Each KMS alias of the template with a new key of its target's spec (the treasury's secp256k1 key)."""
    kms = client("kms", endpoint)
    existing = {alias["AliasName"] for alias in kms.list_aliases()["Aliases"]}
    for resource in template.of_type("AWS::KMS::Alias").values():
        props = template.resolve(resource["Properties"], endpoint)
        if props["AliasName"] in existing:
            continue
        target = template.resources[resource["Properties"]["TargetKeyId"]["Ref"]]["Properties"]
        key = kms.create_key(KeySpec=target["KeySpec"], KeyUsage=target["KeyUsage"],
                             Description=str(target.get("Description", "")))["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=props["AliasName"], TargetKeyId=key)
