"""The local stack creates exactly what template.yaml declares."""
from __future__ import annotations

import boto3

from local.template import LocalTemplate


def test_every_table_queue_and_state_machine_of_the_template_exists(aws):
    template = LocalTemplate()
    tables = set(boto3.client("dynamodb").list_tables()["TableNames"])
    assert tables == {template.physical_name(lid) for lid in template.of_type("AWS::DynamoDB::Table")}
    queue_urls = boto3.client("sqs").list_queues()["QueueUrls"]
    assert {url.rsplit("/", 1)[1] for url in queue_urls} == {
        template.physical_name(lid) for lid in template.of_type("AWS::SQS::Queue")
    }


def test_every_queue_with_a_consumer_has_a_dead_letter_queue():
    template = LocalTemplate()
    consumed = {queue for function in template.functions().values() for queue, _ in function.queues}
    assert consumed, "the template declares SQS consumers"
    for queue in consumed:
        assert "RedrivePolicy" in template.resources[queue]["Properties"], queue


def test_routes_resolve_path_parameters():
    routes = LocalTemplate().routes()
    matches = [(route.function, route.match("POST", "/agent/jobs/abc/complete")) for route in routes]
    assert ("AgentApiFunction", {"proxy": "jobs/abc/complete"}) in matches
