"""Analytics as a user meets it: the indexer Lambda over a real anvil chain, then /analytics views with PNG
charts, /watch alerts through the notify queue, /export through the export queue and the exporter Lambda
(CSV, JSON lines and Parquet read back and compared with the chain's ground truth)."""
from __future__ import annotations

import csv
import io
import json
from contextlib import contextmanager

import pytest

from depu.bot.registry import Incoming
from local.devchain import DevChain
from recording_chat import RecordingChat
from telegram_harness import FakeLambdaContext, load_function, sqs_event

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n"


def new_chat() -> RecordingChat:
    """Exports go through the queue: a document sent straight to the chat fails the test."""
    return RecordingChat(allow_documents=False)


def message(command: str, args: str = "", user_id: int = 42) -> Incoming:
    return Incoming(update_id=1, user_id=user_id, chat_id=user_id, chat_type="private", text=f"/{command} {args}",
                    command=command, args=args, message_id=3, first_name="Ada")


def run(incoming: Incoming, chat: RecordingChat) -> str:
    """Through the dispatcher, as the webhook runs it (it decodes the button and runs the flow's entry)."""
    from depu.bot.dispatch import dispatch

    return dispatch(incoming, chat, correlation_id="test")


def press(data: str, user_id: int = 42) -> Incoming:
    return Incoming(update_id=2, user_id=user_id, chat_id=user_id, chat_type="private", callback_id="cb",
                    callback_data=data, message_id=7, first_name="Ada")


class Context(FakeLambdaContext):
    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 12_000  # the handler keeps 10 s back: about 2 s of indexing, then it returns


def drain(queue_url: str) -> list[dict]:
    import boto3

    sqs = boto3.client("sqs")
    bodies = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return bodies
        for item in messages:
            bodies.append(json.loads(item["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=item["ReceiptHandle"])


def index_to_head(chain, invocations: int = 20) -> None:
    """Invoke the indexer Lambda (2 s of work each) until it has the chain's head; each run resumes."""
    handler = load_function("indexer").lambda_handler
    for _ in range(invocations):
        if handler({}, Context())["checkpoint"] == chain.block_number():
            return
    raise AssertionError("the indexer did not catch up")


@pytest.fixture
def indexed(aws, monkeypatch):
    """A chain with known activity, indexed by the real indexer Lambda handler."""
    with DevChain(accounts=6) as chain:
        chain.deploy_defaults()
        chain.activity(rounds=3, seed=4, per_block=4)
        monkeypatch.setenv("CHAIN_RPC_URL", chain.rpc_url)
        monkeypatch.setenv("CHAIN_CONFIRMATIONS", "0")
        monkeypatch.setenv("CHAIN_START_BLOCK", "0")
        from depu.config import get_settings

        get_settings.cache_clear()
        index_to_head(chain)
        from depu.bot import analytics as bot

        yield chain, bot


def test_views_show_exact_figures_and_send_charts(indexed):
    chain, bot = indexed
    chat = new_chat()
    bot.analytics(message("analytics"), chat)
    assert "Chain analytics" in chat.text
    run(press("an:1:c:1h"), chat)
    assert f"up to block {chain.block_number()}" in chat.text
    transfers = sum(1 for t in chain.history)
    assert f"transfers: {transfers:,}" in chat.text
    assert chat.photos[-1][0].startswith(PNG)

    # a token: volume equals the ground truth's sum, exactly, in whole tokens
    usdd = chain.tokens["USDD"]
    moved = [t for t in chain.history if t.token == usdd.address]
    run(press(f"an:1:t:24h:{usdd.address.lower()}"), chat)
    from depu.analytics.amounts import fmt

    assert f"Transfers: {len(moved):,}" in chat.text
    assert f"volume: {fmt(sum(t.amount for t in moved), 6, 'USDD')}" in chat.text
    biggest = max(moved, key=lambda t: t.amount)
    assert fmt(biggest.amount, 6, "USDD") in chat.text.split("Top transfers")[1]
    assert chat.photos[-1][0].startswith(PNG)
    # USDD is a stablecoin: its charts are in dollars, and the captions say so
    assert [caption for _, caption, _ in chat.photos[-2:]] == [
        "USDD: volume per hour in US dollars, last 24 h", "USDD: top movers (sent + received) in US dollars, last 24 h"]

    # an address: balances seen equal the truth's in/out for the 18-decimal token
    holder = chain.accounts[2]
    dusd = chain.tokens["DUSD"].address
    received = sum(t.amount for t in chain.history if t.token == dusd and t.recipient == holder)
    sent = sum(t.amount for t in chain.history if t.token == dusd and t.sender == holder)
    bot.analytics(message("analytics", holder), chat)
    assert f"{fmt(received, 18, 'DUSD')} / {fmt(sent, 18, 'DUSD')}" in chat.text
    assert chat.photos[-1][0].startswith(PNG)
    photo = chat.photos[-1][0]
    import struct

    width, height = struct.unpack(">II", photo[16:24])
    assert (width, height) == (1000, 700)

    # the odd token has no metadata: amounts stay in base units, said so
    odd = chain.tokens["ODD"].address
    bot.analytics(message("analytics", odd), chat)
    assert odd.lower() in chat.text and "amounts are in base units" in chat.text
    assert chat.photos[-2][1].endswith(": volume per hour in base units, last 24 h"), "no decimals: no dollars"


@contextmanager
def drawn_charts(monkeypatch):
    """Every chart the bot draws (really drawn by matplotlib), as ``charts.Chart``: values read off the figure."""
    from depu.analytics import charts

    drawn: list = []
    for name in ("draw_flows", "draw_bars"):
        real = getattr(charts, name)

        def spy(*args, _real=real, **kwargs):
            chart = _real(*args, **kwargs)
            drawn.append(chart)
            return chart

        monkeypatch.setattr(charts, name, spy)
    yield drawn


def test_charts_plot_dollars_where_a_price_exists_else_token_units(aws, monkeypatch):
    """DETH is priced by the local chain's DepuPair at 3,000 USDD: its volume, top movers and an address's
    flows are charted in dollars (3,000 times the token amounts); a token without a pool stays in tokens."""
    from decimal import Decimal

    from depu.analytics import views

    with DevChain(accounts=5) as chain:
        chain.deploy_defaults()
        chain.deploy_market(eth_price=3000, depth_eth=1000)
        # no pool; and its symbol is a formula matplotlib cannot draw: the charts must draw it as text
        plain = chain.deploy_token("Plain Token", "$^$", 18, 10**6 * 10**18)
        monkeypatch.setenv("CHAIN_RPC_URL", chain.rpc_url)
        monkeypatch.setenv("CHAIN_CONFIRMATIONS", "0")
        monkeypatch.setenv("CHAIN_START_BLOCK", "0")
        from depu.config import get_settings

        get_settings.cache_clear()
        for _ in range(2):  # price history: the time-weighted price needs a few minutes of it
            chain.rpc("evm_increaseTime", 600)
            chain.rpc("evm_mine")
            index_to_head(chain)
        deth, holder, other = chain.tokens["DETH"], chain.accounts[2], chain.accounts[3]
        chain.transfer(deth, chain.accounts[0], holder, 5 * 10**18)
        chain.transfer(deth, holder, other, 2 * 10**18)
        chain.transfer(plain, chain.accounts[0], holder, 7 * 10**18)
        index_to_head(chain)
        from depu.bot import analytics as bot

        chat = new_chat()
        with drawn_charts(monkeypatch) as drawn:
            bot.analytics(message("analytics", deth.address), chat)
            view = views.token_view(deth.address.lower(), "24h")
            assert abs(view.price_usd - 3000) < Decimal("0.01")
            volume, movers = drawn
            assert volume.value_label == movers.value_label == views.USD_LABEL
            assert sum(volume.values) == pytest.approx(float(view.volume_usd), rel=1e-9)
            assert sum(volume.values) == pytest.approx(float(view.volume) / 1e18 * 3000, rel=1e-4)
            assert list(movers.values) == pytest.approx([float(view.usd(moved)) for _, moved in view.top_movers])
            assert [caption for _, caption, _ in chat.photos] == [
                "DETH: volume per hour in US dollars, last 24 h",
                "DETH: top movers (sent + received) in US dollars, last 24 h"]

            drawn.clear()
            bot.analytics(message("analytics", other), chat)  # received 2 DETH: $6,000 in
            [flows] = drawn
            assert flows.value_label == views.USD_LABEL and sum(flows.values) == pytest.approx(6000, rel=1e-4)
            assert chat.photos[-1][1] == "DETH in and out per hour in US dollars, last 24 h"

            drawn.clear()
            bot.analytics(message("analytics", plain.address), chat)  # no pool: tokens, and the label says so
            volume, movers = drawn
            assert volume.value_label == movers.value_label == "$^$ (no dollar price)"
            assert 7.0 in movers.values, "the holder received 7 tokens: plotted as 7"
            assert chat.photos[-2][1] == "$^$: volume per hour in $^$, last 24 h"
            assert all(photo.startswith(PNG) for photo, _, _ in chat.photos)


def test_bad_input_gets_a_clear_error(indexed):
    from depu.errors import UserError

    chain, bot = indexed
    chat = new_chat()
    for command, args, expected in [
        ("watch", "0x1234", "not an Ethereum address"),
        ("watch", "0x" + "a" * 39 + "G", "not an Ethereum address"),
        ("watch", chain.accounts[1][:-1] + ("a" if chain.accounts[1][-1] != "a" else "b"), "checksum"),
        ("watch", f"{chain.accounts[1]} lots", "must be a number"),
        ("watch", f"{chain.accounts[1]} -5", "zero or positive"),
        ("analytics", "vitalik.eth", "not an Ethereum address"),
        ("export", "transfers", "Usage"),
        ("export", "balances 1-2 csv", "Dataset must be"),
        ("export", "transfers 9-2 csv", "START ≤ END"),
        ("export", "transfers 1-200000000 csv", "At most"),
        ("export", "blocks 1-2 xlsx", "Format must be"),
        ("watch", f"{chain.accounts[1]} 10k$", "must be a number"),
        ("label", f"{chain.accounts[1]} <b>x</b>", "may hold letters"),
        ("label", "0x1234 name", "not an Ethereum address"),
    ]:
        with pytest.raises(UserError) as error:
            getattr(bot, command)(message(command, args), chat)
        assert expected in error.value.message, (command, args)
    from depu.analytics import watches

    assert watches.of_user(42) == []  # nothing half-created


def test_watch_alerts_through_the_notify_queue(indexed, monkeypatch):
    chain, bot = indexed
    from depu.config import get_settings

    chat = new_chat()
    watched = chain.accounts[3]
    bot.watch(message("watch", f"{watched} 0.5"), chat)
    assert "Watching" in chat.text
    bot.watch(message("watch", ""), chat)
    assert watched.lower() in chat.text
    drain(get_settings().notify_queue_url)

    dusd, usdd = chain.tokens["DUSD"], chain.tokens["USDD"]
    chain.transfer(dusd, watched, chain.accounts[4], 10**18)  # 1 DUSD: alert
    chain.transfer(usdd, chain.accounts[4], watched, 400_000)  # 0.4 USDD: below the minimum
    chain.send_eth(chain.accounts[5], watched, 2 * 10**18)  # 2 ETH in: alert
    index_to_head(chain)
    notices = drain(get_settings().notify_queue_url)
    texts = sorted(n["text"] for n in notices)
    assert len(notices) == 2 and all(n["chat_id"] == 42 for n in notices)
    assert "sent 1 DUSD" in texts[0] or "sent 1 DUSD" in texts[1]
    assert any("received 2 ETH" in t for t in texts), texts
    assert len({n["dedupe_key"] for n in notices}) == 2

    bot.unwatch(message("unwatch", watched), chat)
    assert "Stopped watching" in chat.text
    chain.transfer(dusd, watched, chain.accounts[4], 10**18)
    index_to_head(chain)
    assert drain(get_settings().notify_queue_url) == []


class Alerts:
    """Notices taken off the notify queue so far; ``wait`` polls it until one matches or its deadline passes."""

    def __init__(self) -> None:
        from depu.config import get_settings

        self.queue_url = get_settings().notify_queue_url
        self.seen: list[dict] = []

    def take(self) -> list[dict]:
        self.seen.extend(drain(self.queue_url))
        return self.seen

    def wait(self, chat_id: int, block: int, timeout: float = 30.0) -> dict:
        from forks_support import wait_for

        return wait_for(lambda: next((n for n in self.take() if n["chat_id"] == chat_id
                                      and f"block {block}," in n["text"]), None),
                        timeout, f"an alert to chat {chat_id} for block {block}")

    def of(self, chat_id: int, block: int) -> list[dict]:
        return [n for n in self.take() if n["chat_id"] == chat_id and f"block {block}," in n["text"]]


@contextmanager
def invocation_following_the_head(chain, alerts: Alerts):
    """One indexer Lambda invocation (its own process, 80 s of budget), entered once it has indexed a block
    mined after it started: from then on it is polling the head, mid-invocation. Ended when the test is."""
    from depu.chain.indexer import load_checkpoint
    from forks_support import wait_for
    from indexer_invocation import IndexerInvocation

    with IndexerInvocation(80) as run:
        started = chain.mine()
        wait_for(lambda: load_checkpoint().number >= started or not run.running, 60, "the invocation to start")
        assert run.running, run.output()
        alerts.take()  # nothing from before the test's own moves
        yield run


def test_a_watch_made_during_an_indexer_run_alerts_the_very_next_block(indexed):
    """The first transfer after the /watch reply is alerted by the invocation already running (it used to load
    watches once at its start and skip the address for the rest of its ~50 s)."""
    chain, bot = indexed
    alerts = Alerts()
    with invocation_following_the_head(chain, alerts) as run:
        watched = chain.accounts[3]
        chat = new_chat()
        bot.watch(message("watch", watched), chat)
        assert "Watching" in chat.text
        chain.transfer(chain.tokens["DUSD"], chain.accounts[4], watched, 10**18)
        block = chain.block_number()
        notice = alerts.wait(42, block)
        assert "received 1 DUSD" in notice["text"] and watched.lower() in notice["text"]
        assert run.running, "the alert came from the invocation that was running when /watch was answered"
        assert len(alerts.of(42, block)) == 1


def test_unwatch_stops_alerts_at_once(indexed):
    """After the /unwatch reply the running invocation alerts nothing more for the address, while another
    chat's watch on the other side of the same transfer is still alerted for that block."""
    chain, bot = indexed
    watched, other = chain.accounts[3], chain.accounts[5]
    mine, theirs = new_chat(), new_chat()
    bot.watch(message("watch", watched), mine)
    bot.watch(message("watch", other, user_id=43), theirs)
    alerts = Alerts()
    with invocation_following_the_head(chain, alerts) as run:
        dusd = chain.tokens["DUSD"]
        chain.transfer(dusd, watched, other, 10**18)
        before = chain.block_number()
        assert "sent 1 DUSD" in alerts.wait(42, before)["text"]
        alerts.wait(43, before)

        bot.unwatch(message("unwatch", watched), mine)
        assert "Stopped watching" in mine.text
        chain.transfer(dusd, watched, other, 2 * 10**18)
        after = chain.block_number()
        assert "received 2 DUSD" in alerts.wait(43, after)["text"]  # the block was looked at, by this run
        assert alerts.of(42, after) == [], "no alert after the /unwatch reply"
        assert run.running


def test_markers_follow_the_watches_of_an_address(aws):
    """An address's marker (what the indexer's per-block lookup reads) exists exactly while it has a watch."""
    from decimal import Decimal

    from depu.analytics import watches
    from depu.chain import store

    address = "0x" + "ab" * 20

    def marked() -> bool:
        return store.get(f"{watches.MARKER_PREFIX}{address}", watches.MARKER_SK) is not None

    assert watches.watching([address]) == {} and not marked()
    assert watches.add(1, 1, address, Decimal(0)) and watches.add(2, -100200, address, Decimal("2.5"))
    assert watches.add(1, 1, address, Decimal(3))  # an update, not a second watch
    found = watches.watching([address, "0x" + "cd" * 20])
    assert sorted((w.chat_id, w.user_id, w.min_amount) for w in found[address]) == [
        (-100200, 2, Decimal("2.5")), (1, 1, Decimal(3))] and list(found) == [address]
    assert watches.remove(1, address) and marked()
    assert [w.chat_id for w in watches.watching([address])[address]] == [-100200]
    assert watches.remove(2, address) and not marked() and watches.watching([address]) == {}
    assert not watches.remove(2, address)
    assert watches.add(2, 5, address, Decimal(0)) and marked()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_in_each_format_reads_back_exactly(indexed, fmt):
    import boto3

    from depu.config import get_settings

    chain, bot = indexed
    chat = new_chat()
    head = chain.block_number()
    bot.export(message("export", f"transfers 0-{head} {fmt}"), chat)
    assert "Preparing transfers" in chat.text
    requests = drain(get_settings().export_queue_url)
    assert len(requests) == 1 and requests[0]["user_id"] == 42
    exporter = load_function("exporter")
    result = exporter.lambda_handler(sqs_event([json.dumps(requests[0])]), FakeLambdaContext())
    assert result == {"batchItemFailures": []}
    notices = drain(get_settings().notify_queue_url)
    progress = [n for n in notices if n["slot"]]
    assert progress and all(n["slot"] == progress[0]["slot"] for n in progress), "one progress message, edited"
    [notice] = [n for n in notices if n["document_key"]]
    assert notice["chat_id"] == 42 and notice["document_key"].startswith("exports/42/")
    assert notice["filename"].endswith({"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}[fmt])
    body = boto3.client("s3").get_object(Bucket=get_settings().artifacts_bucket, Key=notice["document_key"])["Body"].read()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(body.decode())))
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in body.decode().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(io.BytesIO(body)).to_pylist()
    got = sorted((int(r["block_number"]), r["tx_hash"], str(r["amount"] or "")) for r in rows)
    want = sorted((t.block_number, t.tx_hash, "" if t.amount is None else str(t.amount)) for t in chain.history)
    assert got == want


def test_dashboard_and_profile_section_without_activity(indexed):
    chain, bot = indexed
    chat = new_chat()
    bot.dashboard(message("dashboard"), chat)
    assert "Nothing to chart yet" in chat.text
    from depu.bot.sections import render_sections

    sections = dict(render_sections(42, bot.FEATURE.sections))
    assert "No watched addresses" in sections["Analytics"]


def test_bot_module_imports_no_heavy_library():
    """The webhook loads this feature on its first update: matplotlib, pyarrow and web3 must wait for use."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = (
        "import sys\n"
        f"sys.path[:0] = [{str(root / 'layers' / 'depu')!r}]\n"
        "import depu.bot.analytics, depu.analytics.export\n"
        "print(','.join(n for n in ('web3', 'matplotlib', 'pyarrow', 'eth_hash') if n in sys.modules) or 'none')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


def test_a_busy_watched_address_cannot_flood_the_chat(indexed):
    chain, bot = indexed
    from depu.config import get_settings

    watched = chain.accounts[1]
    bot.watch(message("watch", watched), new_chat())
    drain(get_settings().notify_queue_url)
    chain.begin_block()
    for n in range(8):
        chain.transfer(chain.tokens["USDD"], watched, chain.accounts[2 + n % 4], 1_000_000 + n)
    mined = chain.end_block()
    assert len({t.block_number for t in mined}) == 1
    index_to_head(chain)
    notices = drain(get_settings().notify_queue_url)
    assert len(notices) == 6  # five alerts, then one summary for the other three
    assert sum("and 3 more transfers" in n["text"] for n in notices) == 1


def test_address_typed_after_the_address_button(indexed):
    chain, bot = indexed
    chat = new_chat()
    run(press("an:1:ask"), chat)
    assert "Send the address" in chat.text
    typed = Incoming(update_id=3, user_id=42, chat_id=42, chat_type="private", text="0xnope", message_id=4)
    assert run(typed, chat) == "text" and "not an Ethereum address" in chat.text
    holder = chain.accounts[2]
    typed = Incoming(update_id=4, user_id=42, chat_id=42, chat_type="private", text=f" {holder} ", message_id=5)
    assert run(typed, chat) == "text"
    assert holder.lower() in chat.text and "Seen since indexing began" in chat.text
    other = Incoming(update_id=5, user_id=42, chat_id=42, chat_type="private", text=holder, message_id=6)
    assert run(other, chat) == "unhandled_text"  # the flow ended: later text is not taken


def test_dashboard_charts_the_users_own_gpu_time_and_forks(aws):
    from dashboard_support import seed_fork, seed_running_job

    from depu.bot import analytics as bot
    from depu.jobs.models import Job

    seed_running_job(42, "job-a")
    Job("job-a").update(actions=[Job.billed_seconds.set(1800)])
    seed_running_job(42, "job-b")
    Job("job-b").update(actions=[Job.billed_seconds.set(600)])
    seed_running_job(77, "job-other")  # someone else's
    Job("job-other").update(actions=[Job.billed_seconds.set(99_999)])
    seed_fork(42, "fork-1", 100)
    seed_fork(42, "fork-2", 101, status="deleted")
    from depu.forks import service as forks
    from depu.jobs import service

    assert service.gpu_seconds_by_class(42) == {"A100-80GB": 2400}  # the user's own jobs only
    assert sorted(fork.status for fork in forks.list_forks(42)) == ["active", "deleted"]
    chat = new_chat()
    bot.dashboard(message("dashboard"), chat)
    assert len(chat.photos) == 2 and all(photo.startswith(PNG) for photo, *_ in chat.photos)
    assert [caption for _, caption, _ in chat.photos] == ["GPU minutes billed, by GPU class", "Your shadow forks, by status"]


def test_dollar_watches_and_labels_in_the_chat(indexed):
    from depu.analytics import labels, watches

    chain, bot = indexed
    chat = new_chat()
    address = chain.accounts[2].lower()
    bot.watch(message("watch", f"{chain.accounts[2]} 10000$"), chat)
    assert "worth at least $10,000" in chat.text and "unconfirmed" in chat.text
    [mine] = watches.of_user(42)
    assert mine["min_usd"] == "10000"
    [current] = watches.watching([address])[address]
    assert current.min_usd == 10000 and current.min_amount == 0
    bot.watch(message("watch"), chat)
    assert f"<code>{address}</code> (min $10000)" in chat.text

    bot.label(message("label", f"{chain.accounts[2]}   my  cold wallet"), chat)
    assert "my cold wallet" in chat.text and labels.user_labels(42) == {address: "my cold wallet"}
    assert labels.user_labels(43) == {}
    bot.label(message("label"), chat)
    assert f"<code>{address}</code> my cold wallet" in chat.text
    bot.analytics(message("analytics", chain.accounts[2]), chat)
    assert "(my cold wallet)" in chat.text
    bot.label(message("label", chain.accounts[2]), chat)
    assert "removed" in chat.text and labels.user_labels(42) == {}
