"""The whole local system, started and stopped as one: what ``python -m local up`` runs.

Order matters: moto first (everything stores there), then the template's resources, the local chain (its URL
is a template parameter), the Telegram stand-in and the runtime (their URLs are parameters too), then the
webhook is registered through the Bot API like ``setWebhook`` in production, and last the agent, which
needs the API. Stopping goes in reverse.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from local import agent_launcher, treasury
from local.moto_server import MotoServer
from local.provision import provision
from local.runtime import LocalRuntime, RuntimeOptions
from local.secrets_store import LocalSecrets
from local.telegram_standin import TelegramStandIn
from local.template import ROOT, LocalTemplate

log = logging.getLogger("local.stack")

STATE_DIR = ROOT / ".local"
STACK_FILE = STATE_DIR / "stack.json"


@dataclass
class StackOptions:
    api_port: int = 3000
    moto_port: int = 5000
    standin_port: int = 8081
    chain_port: int = 8545
    fast_schedules: float | None = None
    chain: bool = True
    agent: bool = True
    state_dir: Path = STATE_DIR
    aws_endpoint: str | None = None  # an already running moto (tests); None starts one
    extra_environment: dict[str, str] = field(default_factory=dict)
    stop_wait_seconds: float = 11.0  # for invocations in flight at stop (RuntimeOptions); `up` waits 3 s


# The local mainnet gets a block every few seconds and a round of transfers every half minute; it does not
# reorg on its own, so the indexer needs only a shallow confirmation depth to show fresh activity.
LOCAL_BLOCK_TIME_S = 2.0
LOCAL_ACTIVITY_PERIOD_S = 30.0
LOCAL_CHAIN_ENVIRONMENT = {"CHAIN_CONFIRMATIONS": "2"}


class LocalStack:
    def __init__(self, secrets: LocalSecrets, options: StackOptions | None = None):
        self._stopping = threading.Event()
        self.secrets = secrets
        self.options = options or StackOptions()
        self.moto: MotoServer | None = None
        self.chain: Any = None
        self.standin: TelegramStandIn | None = None
        self.runtime: LocalRuntime | None = None
        self.agent: agent_launcher.AgentProcess | None = None
        self.chain_url = f"http://127.0.0.1:{self.options.chain_port}"
        self.notes: list[str] = []

    @property
    def aws_endpoint(self) -> str:
        return self.options.aws_endpoint or (self.moto.endpoint if self.moto else "")

    def start(self) -> "LocalStack":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        options = self.options
        _check_ports_free({"API": options.api_port, "Telegram stand-in": options.standin_port,
                           **({} if options.aws_endpoint else {"moto": options.moto_port}),
                           **({"chain": options.chain_port} if options.chain else {})})
        if not options.aws_endpoint:
            self.moto = MotoServer(options.moto_port).start()
        if options.chain:
            self._start_chain()
        else:
            self.notes.append("local chain: off (--no-chain)")
        self.standin = TelegramStandIn(self.secrets.bot_token, port=options.standin_port).start()
        api_url = f"http://127.0.0.1:{options.api_port}"
        payouts = {}
        if self.chain:  # withdrawals pay DUSD on the local chain (local/treasury.py)
            payouts = {"PayoutTokenAddress": self.payout_token, "PayoutChainRpcUrl": self.chain_url}
        template = LocalTemplate(parameters={
            "PublicApiUrl": api_url,
            "TelegramApiBase": self.standin.api_base,
            "ChainRpcUrl": self.chain_url,
            **payouts,
        })

        self.standin.bot_username = template.parameters["BotUsername"]
        provision(template, self.aws_endpoint, bot_token=self.secrets.bot_token,
                  webhook_secret=self.secrets.webhook_secret)
        self.runtime = LocalRuntime(template, self.aws_endpoint, RuntimeOptions(
            port=options.api_port, fast_schedules=options.fast_schedules,
            extra_environment={**LOCAL_CHAIN_ENVIRONMENT, **options.extra_environment},
            stop_wait_seconds=options.stop_wait_seconds,
        )).start()
        self._register_webhook()
        if options.agent:
            self._start_agent()
        else:
            self.notes.append("local agent: off (--no-agent)")
        self._write_stack_file()

    def _start_chain(self) -> None:
        try:
            from local.devchain import DevChain
        except ImportError:
            self.notes.append("local chain: skipped (local/devchain.py not available)")
            return
        log_path = self.options.state_dir / "logs" / "anvil.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.chain = DevChain(self.options.chain_port, log_path=log_path).start()
        except (OSError, RuntimeError, TimeoutError) as error:
            self.notes.append(f"local chain: failed to start ({error}); see {log_path}")
            return
        self.chain_url = self.chain.rpc_url
        self.payout_token = treasury.first_contract_address(self.chain.accounts[0])
        self.treasury_alias = LocalTemplate().resolve(
            LocalTemplate().resources["TreasuryKeyAlias"]["Properties"]["AliasName"])
        self.notes.append(f"local chain: {self.chain_url} (chain id {self.chain.chain_id}); "
                          "DePU's test tokens and some activity are being added in the background")
        threading.Thread(target=self._seed_chain, name="depu-local-chain-seed", daemon=True).start()

    def _seed_chain(self) -> None:
        """Deploy the test tokens and make known activity, then keep mainnet moving like mainnet: a block every
        ``LOCAL_BLOCK_TIME_S`` and a round of transfers every ``LOCAL_ACTIVITY_PERIOD_S``, so forks have a head
        to sync to and analytics something to show. Blocks are mined from this one thread (anvil's own interval
        mining would fight the automine its transfers rely on)."""
        chain = self.chain
        try:
            chain.deploy_defaults()
            chain.deploy_market()  # DePU's DETH/USDD pair: dollar prices (at the addresses price_pools.json lists)
            treasury.fund(chain, self.aws_endpoint, self.treasury_alias, self.payout_token)
            chain.activity(rounds=5)
            log.info("local chain seeded: head block %d", chain.block_number())
            seed, last_activity = 8, time.monotonic()
            while not self._stopping.wait(LOCAL_BLOCK_TIME_S) and self.chain is chain:
                if time.monotonic() - last_activity >= LOCAL_ACTIVITY_PERIOD_S:
                    chain.activity(rounds=1, seed=seed)
                    seed, last_activity = seed + 1, time.monotonic()
                else:
                    chain.mine(1)
        except Exception as error:  # noqa: BLE001 - a bare chain still serves forks
            if self.chain is chain and not self._stopping.is_set():
                log.warning("local chain activity stopped: %s", error)

    def _register_webhook(self) -> None:
        """The same call scripts/setup_bot.py makes against Telegram in production."""
        assert self.standin and self.runtime
        response = requests.post(
            f"{self.standin.api_base}/bot{self.secrets.bot_token}/setWebhook",
            json={"url": f"{self.runtime.url}/telegram/webhook", "secret_token": self.secrets.webhook_secret,
                  "allowed_updates": ["message", "callback_query", "pre_checkout_query"]},
            timeout=10,
        )
        response.raise_for_status()

    def _start_agent(self) -> None:
        assert self.runtime
        if "AgentApiFunction" in self.runtime.skipped:
            self.notes.append("local agent: skipped (functions/agent_api/app.py not written yet)")
            return
        try:
            self.agent = agent_launcher.start_local_agent(self.runtime.url, self.options.state_dir,
                                                          chain_url=self.chain_url if self.chain else None)
        except Exception as error:  # noqa: BLE001 - the rest of the stack is still useful
            log.exception("local agent could not start")
            self.notes.append(f"local agent: failed to start ({type(error).__name__}); see the log above")
            return
        self.notes.append(f"local agent: running, log in {self.agent.log_path}" if self.agent
                          else "local agent: skipped (agent/depu_agent/__main__.py not written yet)")

    def _write_stack_file(self) -> None:
        """Where everything listens, for `make chat` and `python -m local status` (no secrets in here)."""
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        (self.options.state_dir / "stack.json").write_text(json.dumps(self.urls(), indent=1), encoding="utf-8")

    def urls(self) -> dict[str, Any]:
        return {
            "api_url": self.runtime.url if self.runtime else None,
            "standin_url": self.standin.url if self.standin else None,
            "aws_endpoint": self.aws_endpoint,
            "chain_url": self.chain_url if self.chain else None,
            "agent_pid": self.agent.process.pid if self.agent else None,
            "pid": os.getpid(),
        }

    def banner(self) -> str:
        assert self.runtime and self.standin
        lines = [
            "",
            "DePU is running locally",
            f"  API (template.yaml routes)  {self.runtime.url}   {len(self.runtime.routes)} routes",
            f"  AWS (moto)                  {self.aws_endpoint}",
            f"  Telegram stand-in           {self.standin.url}   webhook -> {self.runtime.url}/telegram/webhook",
            *(f"  {note}" for note in self.notes),
        ]
        if self.runtime.skipped:
            lines.append(f"  not written yet: {', '.join(sorted(self.runtime.skipped))}")
        lines += ["", "Run `make chat` in another terminal to talk to the bot. Ctrl-C stops everything.", ""]
        return "\n".join(lines)

    def stop(self) -> None:
        self._stopping.set()
        for name, part in (("agent", self.agent), ("runtime", self.runtime), ("stand-in", self.standin),
                           ("chain", self.chain), ("moto", self.moto)):
            if part is None:
                continue
            try:
                part.stop()
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("stopping the %s failed", name)
        self.agent = self.runtime = self.standin = self.chain = self.moto = None
        stack_file = self.options.state_dir / "stack.json"
        try:
            if json.loads(stack_file.read_text(encoding="utf-8")).get("pid") == os.getpid():
                stack_file.unlink()
        except (OSError, ValueError):
            pass


def _check_ports_free(ports: dict[str, int]) -> None:
    """Fail before starting anything (moto's server thread would otherwise wait forever on a taken port)."""
    import socket

    for name, port in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is fine
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise OSError(f"port {port} for the {name} is in use (another `make up`? see `--help` for "
                              "other ports)") from None
