"""Decide which agents may host shadow forks: the operator's allow-list (an agent's own ``fork_host`` is only
an offer; depu.forks.hosts explains why).

    python scripts/approve_fork_host.py --stack-name depu-dev list
    python scripts/approve_fork_host.py --stack-name depu-dev approve ag_0123...
    python scripts/approve_fork_host.py --stack-name depu-dev revoke ag_0123...

Against a deployed stack the tables are found through CloudFormation (``--stack-name``, the AWS credentials
of the operator's shell); against the local stack the environment already names them (``make up`` approves
its own local agent through ``main`` here). ``approve`` also lifts a suspension: the operator reviewed the
host. ``revoke`` stops new tasks at once; the fork janitor then rebuilds the host's forks elsewhere.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "layers" / "depu") not in sys.path:
    sys.path.insert(0, str(ROOT / "layers" / "depu"))

TABLES = {"AGENTS_TABLE": "AgentsTable", "FORKS_TABLE": "ForksTable"}


def use_stack(stack_name: str, region: str | None) -> None:
    """Point depu's settings at the stack's tables (before any depu model is imported)."""
    import boto3

    cloudformation = boto3.client("cloudformation", region_name=region)
    for variable, logical_id in TABLES.items():
        resource = cloudformation.describe_stack_resource(StackName=stack_name, LogicalResourceId=logical_id)
        os.environ[variable] = resource["StackResourceDetail"]["PhysicalResourceId"]
    if region:
        os.environ["AWS_REGION"] = os.environ["AWS_DEFAULT_REGION"] = region


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack-name", help="the deployed stack whose tables to use (default: the environment's)")
    parser.add_argument("--region")
    parser.add_argument("action", choices=("list", "approve", "revoke"))
    parser.add_argument("agent_id", nargs="?")
    args = parser.parse_args(argv)
    if args.action != "list" and not args.agent_id:
        parser.error(f"{args.action} needs an agent id (see: list)")
    if args.stack_name:
        use_stack(args.stack_name, args.region)

    from depu.agents.registry import Agent
    from depu.forks import hosts

    if args.action == "list":
        offered = [agent for agent in Agent.scan() if hosts.FORK_HOST_CAPABILITY in (agent.capabilities or [])]
        for agent in sorted(offered, key=lambda a: a.agent_id):
            print(json.dumps(hosts.describe(agent)))
        return 0
    try:
        agent = hosts.approve(args.agent_id) if args.action == "approve" else hosts.revoke(args.agent_id)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.action}d fork host {agent.agent_id} ({agent.name}, provider {int(agent.provider_id)}, "
          f"fork URL base {agent.fork_rpc_base_url})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
