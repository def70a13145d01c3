"""``depu-agent register --api URL --provider-token T --config PATH`` and ``depu-agent run --config PATH``.

``depu-agent --config PATH`` alone means ``run``. The provider token may also come from the environment
(DEPU_PROVIDER_TOKEN or DEPU_AGENT_ENROLMENT_TOKEN) rather than argv, which other local users can read; ``run``
registers with it first when there is no agent token yet.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .api import AgentRejected, ApiUnavailable
from .config import ConfigError, load_config
from .daemon import EXIT_NOT_REGISTERED, EXIT_UNVERIFIED, Agent, RegistrationFailed, check_sandbox, register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="depu-agent", description="DePU provider agent")
    parser.add_argument("--config", dest="top_config", help="config file (for run without a subcommand)")
    commands = parser.add_subparsers(dest="command")
    reg = commands.add_parser("register", help="verify this machine's GPUs and register with a provider token")
    reg.add_argument("--api", help="DePU API base URL")
    reg.add_argument("--provider-token", help="token from /provider in Telegram (or env DEPU_PROVIDER_TOKEN)")
    reg.add_argument("--config", help="config file to write (JSON)")
    reg.add_argument("--name", help="a name for this machine (default: hostname)")
    reg.add_argument("--gpus", help="GPU indices to share, e.g. 0,1 (default: all)")
    reg.add_argument("--capabilities", help="comma-separated, e.g. gpu,fork_host")
    reg.add_argument("--no-verify", action="store_true", help="skip the verification benchmark (not recommended)")
    run = commands.add_parser("run", help="serve jobs until stopped")
    run.add_argument("--config")
    parser.add_argument("--log-level", default=os.environ.get("DEPU_AGENT_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.config = getattr(args, "config", None) or args.top_config
    if not args.config:
        parser.error("--config is required")

    try:
        if args.command == "register":
            return _register(args)
        return _run(args)  # "run" or no subcommand
    except ConfigError as exc:
        print(f"depu-agent: configuration error: {exc}", file=sys.stderr)
        return 2


def _register(args) -> int:
    token = args.provider_token or _token_from_environment()
    if not token:
        print("depu-agent: give --provider-token (from /provider in Telegram)", file=sys.stderr)
        return 2
    config = load_config(args.config, api_url=args.api, name=args.name, gpus=args.gpus,
                         capabilities=args.capabilities, verify=False if args.no_verify else None)
    try:
        registered = register(config, token)
    except (RegistrationFailed, ApiUnavailable, AgentRejected) as exc:
        print(f"depu-agent: registration failed: {exc}", file=sys.stderr)
        return 1
    config.save(args.config)
    bench = registered["benchmark"]
    print(f"registered agent {registered['agent_id']} with {len(registered['gpus'])} device(s); "
          f"verified={registered.get('verified')} ({registered.get('verdict')}); "
          f"own benchmark fp32={bench.get('fp32_tflops')} TFLOP/s")
    return 0


def _run(args) -> int:
    config = load_config(args.config)
    if config.read_token() is None:
        token = _token_from_environment()
        if not token:
            print("depu-agent: not registered; run `depu-agent register` first", file=sys.stderr)
            return EXIT_NOT_REGISTERED
        fault = check_sandbox(config)
        try:
            register(config, token, fault=fault)  # registered with its fault: never offered work it cannot run
        except (RegistrationFailed, ApiUnavailable, AgentRejected) as exc:
            print(f"depu-agent: registration failed: {exc}", file=sys.stderr)
            return 1
    else:
        if config.verify and not _still_verified(config):
            print("depu-agent: start-up verification failed; not serving (see the log)", file=sys.stderr)
            return EXIT_UNVERIFIED
        fault = check_sandbox(config)
    agent = Agent(config, fault=fault)
    agent.install_signal_handlers()
    code = agent.run()
    if code:
        print(f"depu-agent: stopped with status {code}"
              + (" (the API rejected this agent's token)" if code == 3 else ""), file=sys.stderr)
    return code


def _still_verified(config) -> bool:
    """Every start re-runs the verification (registration ran it too): a device that broke or was swapped
    since must not take jobs."""
    from . import gpus, verify_runner

    devices = gpus.discover()
    shared = config.shared_gpu_indices([gpu.index for gpu in devices])
    return bool(verify_runner.verify_devices([gpu for gpu in devices if gpu.index in shared], config)["verified"])


def _token_from_environment() -> str | None:
    """Read once and removed, so no child process can inherit it."""
    found = None
    for name in ("DEPU_PROVIDER_TOKEN", "DEPU_AGENT_ENROLMENT_TOKEN"):
        found = os.environ.pop(name, None) or found
    return found


if __name__ == "__main__":
    sys.exit(main())
