"""``python -m local up | chat | status``: the local stack's command line (``make up`` / ``make chat``)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import requests

from local import chat as chat_cli
from local.stack import STACK_FILE, STATE_DIR, LocalStack, StackOptions


def up(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m local up", description="Run all of DePU on this machine.")
    parser.add_argument("--api-port", type=int, default=3000)
    parser.add_argument("--moto-port", type=int, default=5000)
    parser.add_argument("--standin-port", type=int, default=8081)
    parser.add_argument("--chain-port", type=int, default=8545)
    parser.add_argument("--fast-schedules", type=float, nargs="?", const=5.0, metavar="SECONDS",
                        default=float(os.environ["DEPU_FAST_SCHEDULES"]) if os.environ.get("DEPU_FAST_SCHEDULES")
                        else None,
                        help="run every schedule each SECONDS (default 5) instead of the template's rate "
                             "(or set DEPU_FAST_SCHEDULES=SECONDS)")
    parser.add_argument("--no-chain", action="store_true", help="do not start the local chain (anvil)")
    parser.add_argument("--no-agent", action="store_true", help="do not start a local provider agent")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR,
                        help="where secrets, logs, downloads and stack.json live (default .local)")
    parser.add_argument("--function-log-level", default=None, metavar="LEVEL",
                        help="the functions' POWERTOOLS_LOG_LEVEL (the template says INFO; WARNING is quieter)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from local.secrets_store import load_or_create

    options = StackOptions(
        api_port=args.api_port, moto_port=args.moto_port, standin_port=args.standin_port,
        chain_port=args.chain_port, fast_schedules=args.fast_schedules,
        chain=not args.no_chain, agent=not args.no_agent, state_dir=args.state_dir,
        extra_environment={"POWERTOOLS_LOG_LEVEL": args.function_log_level.upper()} if args.function_log_level
        else {},
        stop_wait_seconds=3.0,  # this process ends right after: Ctrl-C should not wait out an indexer run
    )
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):  # `kill` and a closed terminal stop it as Ctrl-C does
        signal.signal(stop_signal, _interrupt)
    stack = LocalStack(load_or_create(args.state_dir / "secrets.json"), options)
    try:
        stack.start()
        print(stack.banner(), flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(f"cannot start the local stack: {error}", file=sys.stderr)
        return 1
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def status(argv: list[str]) -> int:
    """Which parts of a running `make up` answer."""
    try:
        urls = json.loads(STACK_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        print("the local stack is not running (no .local/stack.json); start it with `make up`")
        return 1
    checks = {
        "API": (urls.get("api_url"), "/"),
        "AWS (moto)": (urls.get("aws_endpoint"), "/moto-api/"),
        "Telegram stand-in": (urls.get("standin_url"), "/_standin/state"),
    }
    healthy = True
    for name, (base, path) in checks.items():
        if not base:
            print(f"  {name:18} off")
            continue
        try:
            response = requests.get(base + path, timeout=3)
            state = "up"
            if name == "Telegram stand-in":
                body = response.json()
                state += f", webhook {'registered' if body['webhook_registered'] else 'NOT registered'}"
                state += f", {len(body['chats'])} chat(s)"
        except requests.RequestException:
            state, healthy = "DOWN", False
        print(f"  {name:18} {base:28} {state}")
    if urls.get("chain_url"):
        try:
            requests.post(urls["chain_url"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber",
                                                   "params": []}, timeout=3).raise_for_status()
            print(f"  {'chain (anvil)':18} {urls['chain_url']:28} up")
        except requests.RequestException:
            print(f"  {'chain (anvil)':18} {urls['chain_url']:28} DOWN")
            healthy = False
    print(f"  {'agent':18} {'pid ' + str(urls['agent_pid']) if urls.get('agent_pid') else 'off'}")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"up": up, "chat": chat_cli.main, "status": status}
    if not argv or argv[0] not in commands:
        print("usage: python -m local {up|chat|status} [options]  (make up, make chat)", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
