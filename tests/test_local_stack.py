"""`python -m local up`'s pieces, wired from template.yaml itself: the real webhook route and function, the
stack's start and stop, and the local secrets file."""
from __future__ import annotations

import json
import os
import socket
import stat
import time

import boto3
import pytest
import requests

from deadlines import scaled
from local.moto_server import free_port
from local.runtime import LocalRuntime, RuntimeOptions
from local.secrets_store import LocalSecrets, load_or_create
from local.stack import LocalStack, StackOptions
from local.telegram_standin import TelegramStandIn
from local.template import ROOT, LocalTemplate
from tests.conftest import TEST_BOT_TOKEN, TEST_WEBHOOK_SECRET

WEBHOOK_APP = ROOT / "functions" / "telegram_webhook" / "app.py"
NOTIFIER_APP = ROOT / "functions" / "notifier" / "app.py"


@pytest.mark.skipif(not WEBHOOK_APP.exists(), reason="functions/telegram_webhook/app.py is not written yet")
def test_telegram_updates_reach_the_real_webhook_function_through_the_templates_route(aws):
    standin = TelegramStandIn(TEST_BOT_TOKEN, port=free_port()).start()
    api_port = free_port()
    template = LocalTemplate(parameters={"TelegramApiBase": standin.api_base,
                                         "PublicApiUrl": f"http://127.0.0.1:{api_port}"})
    runtime = LocalRuntime(template, aws.endpoint, RuntimeOptions(port=api_port)).start()
    try:
        assert any(route.path == "/telegram/webhook" and route.function == "TelegramWebhookFunction"
                   for route in runtime.routes)
        # without Telegram's secret header the function itself turns the request away
        forged = requests.post(f"{runtime.url}/telegram/webhook", json={"update_id": 1}, timeout=30)
        assert forged.status_code not in (404, 501, 502) and 400 <= forged.status_code < 500

        requests.post(f"{standin.url}/bot{TEST_BOT_TOKEN}/setWebhook",
                      json={"url": f"{runtime.url}/telegram/webhook", "secret_token": TEST_WEBHOOK_SECRET},
                      timeout=10).raise_for_status()
        delivery = standin.send_user_message(4242001, None, "/start")
        assert delivery.status == 200
        reply = standin.wait_for_bot_message(4242001, timeout=15)
        assert reply.text.strip()
    finally:
        runtime.stop()
        standin.stop()


@pytest.mark.skipif(not NOTIFIER_APP.exists(), reason="functions/notifier/app.py is not written yet")
def test_the_notify_queue_is_polled_and_delivered_to_the_chat_by_the_real_notifier(aws):
    from depu.notify import Notice, enqueue

    standin = TelegramStandIn(TEST_BOT_TOKEN, port=free_port()).start()
    template = LocalTemplate(parameters={"TelegramApiBase": standin.api_base})
    runtime = LocalRuntime(template, aws.endpoint, RuntimeOptions(port=free_port())).start()
    try:
        enqueue(Notice(chat_id=4242002, text="Job <b>finished</b> &amp; paid",
                       buttons=[[{"text": "Logs", "data": "job:logs:1"}]]))
        delivered = standin.wait_for_bot_message(4242002, timeout=15)
        assert delivered.text == "Job finished & paid"
        assert delivered.button_data() == ["job:logs:1"]
    finally:
        runtime.stop()
        standin.stop()
    notify = boto3.client("sqs").get_queue_attributes(
        QueueUrl=template.queue_url("NotifyQueue", aws.endpoint), AttributeNames=["All"])["Attributes"]
    assert notify["ApproximateNumberOfMessages"] == "0" and notify["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_the_stack_starts_from_the_template_registers_the_webhook_and_stops(aws, tmp_path):
    secrets = LocalSecrets(bot_token="1234:stack-test-token-value", webhook_secret="stack-test-webhook-secret")
    options = StackOptions(api_port=free_port(), standin_port=free_port(), aws_endpoint=aws.endpoint,
                           chain=False, agent=False, state_dir=tmp_path)
    stack = LocalStack(secrets, options).start()
    try:
        assert stack.standin.webhook_url == f"{stack.runtime.url}/telegram/webhook"
        assert len(stack.runtime.routes) == len(LocalTemplate().routes())
        # the functions see the local URLs through the template's parameters
        assert os.environ["TELEGRAM_API_BASE"] == stack.standin.url
        assert os.environ["PUBLIC_API_URL"] == stack.runtime.url
        stack_file = (tmp_path / "stack.json").read_text()
        assert json.loads(stack_file)["standin_url"] == stack.standin.url
        assert secrets.bot_token not in stack_file and secrets.webhook_secret not in stack_file
        assert secrets.bot_token not in stack.banner() and secrets.webhook_secret not in stack.banner()
        assert "make chat" in stack.banner()
        state = requests.get(f"{stack.standin.url}/_standin/state", timeout=10).json()
        assert state["webhook_registered"] and secrets.webhook_secret not in json.dumps(state)
        ports = [stack.runtime.url, stack.standin.url]
    finally:
        stack.stop()
    assert not (tmp_path / "stack.json").exists()
    for url in ports:
        host, port = url.removeprefix("http://").split(":")
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=1)


def test_local_secrets_are_random_private_reused_and_never_shown(tmp_path):
    path = tmp_path / "secrets.json"
    first = load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(path) == first
    assert first.bot_token.split(":")[0].isdigit() and len(first.webhook_secret) >= 40
    assert load_or_create(tmp_path / "other.json") != first
    assert first.bot_token not in repr(first) and first.webhook_secret not in repr(first)
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        load_or_create(path)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not WEBHOOK_APP.exists(), reason="functions/telegram_webhook/app.py is not written yet")
def test_python_m_local_up_then_chat_then_sigterm(tmp_path):
    """The one command, as a user runs it: `up` in one process, `chat` in another, then stop."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    ports = {"--api-port": free_port(), "--moto-port": free_port(), "--standin-port": free_port()}
    command = [sys.executable, "-m", "local", "up", "--no-chain", "--no-agent", "--state-dir", str(tmp_path)]
    for flag, port in ports.items():
        command += [flag, str(port)]
    errors = open(tmp_path / "up.err", "w")
    up = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True)
    banner: list[str] = []
    reader = threading.Thread(target=lambda: banner.extend(up.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + scaled(60)
        while not any("Ctrl-C stops everything" in line for line in banner):
            assert up.poll() is None and time.monotonic() < deadline, (tmp_path / "up.err").read_text()[-2000:]
            time.sleep(0.2)
        standin = f"http://127.0.0.1:{ports['--standin-port']}"
        chat = subprocess.run([sys.executable, "-m", "local", "chat", "--standin", standin, "--user-id", "4242003",
                               "--downloads", str(tmp_path / "dl"), "--quiet-seconds", "1"],
                              input="/start\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert chat.returncode == 0, chat.stderr
        assert "bot: " in chat.stdout and "[1] " in chat.stdout, chat.stdout
        assert json.loads((tmp_path / "stack.json").read_text())["standin_url"] == standin
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=30)
        errors.close()
        reader.join(timeout=5)
    assert code == 0
    assert not (tmp_path / "stack.json").exists()
    secrets = json.loads((tmp_path / "secrets.json").read_text())
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600
    output = "".join(banner) + (tmp_path / "up.err").read_text()
    assert secrets["bot_token"] not in output and secrets["webhook_secret"] not in output
    assert secrets["bot_token"].split(":")[1] not in output


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "functions" / "agent_api" / "app.py").exists()
                    or not (ROOT / "agent" / "depu_agent" / "__main__.py").exists(),
                    reason="the agent API function or the agent's __main__ is not written yet")
def test_the_local_agent_is_enrolled_and_registers_through_the_local_api(aws, tmp_path):
    from local.agent_launcher import LOCAL_PROVIDER_ID, start_local_agent

    template = LocalTemplate()
    runtime = LocalRuntime(template, aws.endpoint, RuntimeOptions(port=free_port())).start()
    agent = None
    try:
        # verification is the agent's own concern (tested with it); skipping it keeps this test short
        agent = start_local_agent(runtime.url, tmp_path, environment={"DEPU_AGENT_VERIFY": "false"})
        assert agent is not None
        config = json.loads((tmp_path / "agent" / "config.json").read_text())
        assert config["api_url"] == runtime.url
        assert "depp_" not in json.dumps(config) and "depa_" not in json.dumps(config)  # no token in the config
        assert "DEPU_AGENT_ENROLMENT_TOKEN" not in " ".join(agent.process.args)  # never on the command line
        agents = boto3.client("dynamodb", endpoint_url=aws.endpoint)
        table = template.physical_name("AgentsTable")
        deadline = time.monotonic() + scaled(45)
        items: list = []
        while not items and time.monotonic() < deadline and agent.process.poll() is None:
            items = agents.scan(TableName=table)["Items"]
            time.sleep(0.5)
        assert items, agent.log_path.read_text()[-2000:]
        assert items[0]["provider_id"]["N"] == str(LOCAL_PROVIDER_ID)
        token_file = tmp_path / "agent" / "agent_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token_file.read_text().strip() not in agent.log_path.read_text()
    finally:
        if agent:
            agent.stop()
        runtime.stop()
    assert agent.process.returncode is not None



class _Up:
    """`python -m local up` with the chain and the agent, as `make up` runs it, on ports of its own."""

    def __init__(self, state_dir, ports: dict[str, int]):
        import subprocess
        import sys

        command = [sys.executable, "-m", "local", "up", "--state-dir", str(state_dir)]
        for flag, port in ports.items():
            command += [flag, str(port)]
        self.errors = open(state_dir / "up.err", "a")
        env = {**os.environ, "DEPU_AGENT_VERIFY": "false"}  # verification is the agent's own test's concern
        self.agent_log = state_dir / "logs" / "agent.log"
        self.log_offset = self.agent_log.stat().st_size if self.agent_log.exists() else 0  # an earlier run's
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.errors, stderr=subprocess.STDOUT, env=env)

    def agent_log_text(self) -> str:
        with open(self.agent_log, encoding="utf-8", errors="replace") as handle:
            handle.seek(self.log_offset)
            return handle.read()

    def kill_everything(self) -> None:
        from agent_process import descendants_of

        for pid in [self.process.pid, *descendants_of(self.process.pid)]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)
        self.errors.close()

    def wait_serving(self) -> list[int]:
        """Once the agent serves: the stack's child processes (the agent, the local chain's anvil)."""
        from agent_process import descendants_of
        from deadlines import wait_for

        def ready():
            assert self.process.poll() is None, (self.errors.name, open(self.errors.name).read()[-3000:])
            return self.agent_log.exists() and "serving GPUs" in self.agent_log_text()
        wait_for(ready, 120, "the stack's agent to serve")
        children = descendants_of(self.process.pid)
        assert len(children) >= 2, children  # at least the agent and the local chain's anvil
        return children


@pytest.mark.e2e
@pytest.mark.slow
def test_make_up_leaves_nothing_behind_on_sighup_or_sigkill_and_starts_again_cleanly(tmp_path):
    import signal

    from agent_process import alive
    from deadlines import wait_for

    ports = {"--api-port": free_port(), "--moto-port": free_port(), "--standin-port": free_port(),
             "--chain-port": free_port()}
    first = _Up(tmp_path, ports)
    try:
        children = first.wait_serving()
        first.process.send_signal(signal.SIGHUP)  # the terminal closed
        asked = time.monotonic()
        assert first.process.wait(timeout=scaled(60)) == 0
        print(f"the stack stopped {time.monotonic() - asked:.1f} s after SIGHUP")
        wait_for(lambda: not [pid for pid in children if alive(pid)], 30, "the agent and anvil to stop")
        assert "INFO depu_agent.daemon: stopped" in first.agent_log_text()  # a graceful stop, not a kill
    finally:
        first.kill_everything()

    second = _Up(tmp_path, ports)  # the same ports at once: nothing of the first is holding them
    try:
        children = second.wait_serving()
        second.process.kill()  # no chance to clean up: the kernel's parent-death signal does it
        second.process.wait(timeout=30)
        wait_for(lambda: not [pid for pid in children if alive(pid)], 30, "the orphaned agent and anvil to stop")
    finally:
        second.kill_everything()
