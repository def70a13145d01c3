"""Revoke provider agents as an operator: every token of a revoked agent answers 401 at once, for good.

    python scripts/revoke_agent.py [--stack NAME | --local URL] AGENT_ID [AGENT_ID ...]
    python scripts/revoke_agent.py [--stack NAME | --local URL] --provider USER_ID     (all of one provider's)

--stack reads the deployed stack's table and queue names from CloudFormation (your AWS credentials);
--local points at the local stack's AWS endpoint (``make up`` prints it); with neither, the environment is
used as the functions see it (AGENTS_TABLE, TOKENS_TABLE, JOBS_TABLE, queue URLs...). The jobs a revoked agent
holds go back to the queue (free for their users). A provider revokes its own machines from /provider.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "layers" / "depu"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

# What the revocation reads and writes, by template.yaml logical id.
STACK_RESOURCES = {
    "AGENTS_TABLE": "AgentsTable",
    "TOKENS_TABLE": "TokensTable",
    "JOBS_TABLE": "JobsTable",
    "USERS_TABLE": "UsersTable",
    "LEDGER_TABLE": "LedgerTable",
    "IDEMPOTENCY_TABLE": "IdempotencyTable",
    "JOB_QUEUE_URL": "JobQueue",
    "NOTIFY_QUEUE_URL": "NotifyQueue",
}


def _use_stack(stack: str) -> None:
    import boto3

    cloudformation = boto3.client("cloudformation")
    for variable, logical_id in STACK_RESOURCES.items():
        detail = cloudformation.describe_stack_resource(StackName=stack, LogicalResourceId=logical_id)
        os.environ[variable] = detail["StackResourceDetail"]["PhysicalResourceId"]


def _use_local(endpoint: str) -> None:
    from local.template import LocalTemplate

    os.environ.update(LocalTemplate().environment(endpoint))
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="revoke_agent.py", description=__doc__.strip().splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stack", help="the deployed stack's name")
    where.add_argument("--local", metavar="URL", help="the local stack's AWS endpoint")
    parser.add_argument("--provider", type=int, help="revoke every agent of this provider (Telegram user id)")
    parser.add_argument("agent_ids", nargs="*", metavar="AGENT_ID")
    args = parser.parse_args(argv)
    if bool(args.agent_ids) == (args.provider is not None):
        parser.print_usage(sys.stderr)
        print("revoke_agent.py: give agent ids or --provider, not both", file=sys.stderr)
        return 2
    if args.stack:
        _use_stack(args.stack)
    elif args.local:
        _use_local(args.local)
    from depu.config import get_settings

    get_settings.cache_clear()
    from depu.agents import registry, revocation

    agent_ids = list(args.agent_ids)
    if args.provider is not None:
        agent_ids = [agent.agent_id for agent in registry.agents_of_provider(args.provider)]
        if not agent_ids:
            print(f"provider {args.provider} has no agents")
            return 1
    failures = 0
    for agent_id in agent_ids:
        result = revocation.revoke(agent_id, by="operator")
        if result.outcome == revocation.NOT_FOUND:
            failures += 1
        moved = f"; requeued {', '.join(result.requeued)}" if result.requeued else ""
        print(f"{agent_id}: {result.outcome}{moved}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
