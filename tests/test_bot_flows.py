"""The flow table (depu.bot.flows) as the dispatcher runs it, with a small flow of this test's own against moto:
entries by step and by ANY, the fallbacks the dispatcher owns, the conditional write of each step and ``then``
running once when two taps race."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from depu.bot import flows
from depu.bot.flows import ANY, DOCUMENT, TEXT, Flow, Turn, button
from depu.chat import Document, Incoming
from depu.errors import UserError
from moto_serializable import serialize_dynamodb
from recording_chat import RecordingChat

USER = 4242


class Counter:
    def __init__(self) -> None:
        self.thens: list[str] = []


@pytest.fixture
def tip(aws, monkeypatch):
    """A two-step "tip" flow: pick an amount (button or typed), then confirm; plus a stateless "ping"."""
    serialize_dynamodb(monkeypatch)
    from depu.bot import dispatch as dispatch_module
    from depu.bot.registry import registry
    from depu.profiles import ensure_profile

    ensure_profile(USER, "Ada")
    seen = Counter()
    race = {"barrier": None}

    def amount(turn: Turn) -> flows.Next:
        value = turn.int_arg(0, allowed=(1, 5))
        if race["barrier"] is not None:
            race["barrier"].wait(timeout=10)  # both taps have read the conversation before either writes
        return flows.go("confirm", {"amount": value}, then=lambda turn: seen.thens.append(f"amount {turn.data['amount']}"))

    def typed_amount(turn: Turn) -> flows.Next:
        if not turn.incoming.text.strip().isdigit():
            raise UserError("Send a whole number.")
        return flows.go("confirm", {"amount": int(turn.incoming.text)})

    def pay(turn: Turn) -> flows.Next:
        return flows.end(then=lambda turn: seen.thens.append(f"paid {turn.data.get('amount')}"))

    def receipt(turn: Turn) -> None:
        turn.reply(f"receipt {turn.incoming.document.file_name}")

    def ping(turn: Turn) -> None:
        if turn.arg(0) == "no":
            raise flows.Refuse("Not now.", alert=True)
        turn.answer("pong")

    flow = Flow(name="tip", prefix="ttip", restart="/tip", steps={
        (ANY, button("ping")): ping,
        ("amount", button("amt")): amount,
        ("amount", TEXT): typed_amount,
        ("confirm", button("pay")): pay,
        ("confirm", DOCUMENT): receipt,
    })
    monkeypatch.setattr(dispatch_module, "_loaded", True)  # only this flow
    monkeypatch.setitem(registry.flows, flow.prefix, flow)
    return flow, seen, race


def run(incoming: Incoming, chat: RecordingChat | None = None) -> tuple[str, RecordingChat]:
    from depu.bot.dispatch import dispatch

    chat = chat or RecordingChat()
    return dispatch(incoming, chat, correlation_id="test"), chat


def press(data: str) -> Incoming:
    return Incoming(update_id=1, user_id=USER, chat_id=USER, chat_type="private", callback_id="cb", callback_data=data,
                    message_id=9)


def typed(text: str = "", document: Document | None = None) -> Incoming:
    return Incoming(update_id=2, user_id=USER, chat_id=USER, chat_type="private", text=text, document=document,
                    message_id=10)


def step() -> tuple[str, str, dict] | None:
    from depu import conversation

    current = conversation.load(USER)
    return (current.flow, current.step, current.data) if current else None


def test_a_flow_runs_by_its_table_and_each_step_is_written(tip):
    flow, seen, _ = tip
    flows.begin(USER, flow, "amount")
    assert run(press(flow.button("5", "amt", 5).data))[0] == "callback:ttip"
    assert step() == ("tip", "confirm", {"amount": 5}) and seen.thens == ["amount 5"]
    run(press(flow.button("Pay", "pay").data))
    assert step() is None and seen.thens == ["amount 5", "paid 5"]  # then saw the data before the flow ended


def test_typed_text_and_documents_go_to_the_step_waiting_for_them(tip):
    flow, _, _ = tip
    flows.begin(USER, flow, "amount")
    outcome, chat = run(typed("lots"))
    assert outcome == "user_error" and chat.reply_texts == ["Send a whole number."]
    assert step() == ("tip", "amount", {})  # the question stays open
    assert run(typed("3"))[0] == "text" and step() == ("tip", "confirm", {"amount": 3})
    outcome, chat = run(typed(document=Document("F1", "r.pdf", None, 10)))
    assert outcome == "document" and chat.reply_texts == ["receipt r.pdf"]
    assert run(typed("4"))[0] == "unhandled_text"  # at confirm, no step takes text


def test_the_dispatchers_fallbacks(tip):
    flow, seen, _ = tip
    # a step's button with no conversation of this flow: an expired menu
    _, chat = run(press(flow.button("1", "amt", 1).data))
    assert chat.answers == [("This menu has expired. Send /tip again.", False)]
    flows.begin(USER, flow, "amount")
    # a step's button at another step: done already
    _, chat = run(press(flow.button("Pay", "pay").data))
    assert chat.answers == [("That step is done already.", False)] and step()[1] == "amount"
    # another release's button, an unknown action, a forged value: expired, as a popup naming the way back
    for data in ("ttip:0:amt:1", "ttip:1:nope", "ttip:1:amt:7", "ttip:1:amt", "ttip"):
        _, chat = run(press(data))
        assert chat.answers == [("This button has expired. Send /tip for a fresh one.", True)], data
    assert step() == ("tip", "amount", {}) and seen.thens == []
    # a prefix nobody owns
    outcome, chat = run(press("zzz:1:x"))
    assert outcome == "expired_callback" and "expired" in chat.answers[0][0]


def test_stateless_entries_need_no_conversation_and_refusals_change_nothing(tip):
    flow, _, _ = tip
    _, chat = run(press(flow.button("Ping", "ping", "yes").data))
    assert chat.answers == [("pong", False)]
    _, chat = run(press(flow.button("Ping", "ping", "no").data))
    assert chat.answers == [("Not now.", True)] and step() is None


def test_a_double_tap_writes_one_step_and_runs_then_once(tip):
    flow, seen, race = tip
    flows.begin(USER, flow, "amount")
    race["barrier"] = threading.Barrier(2)
    data = [flow.button("1", "amt", 1).data, flow.button("5", "amt", 5).data]  # two buttons of one menu, at once
    with ThreadPoolExecutor(2) as pool:
        chats = list(pool.map(lambda d: run(press(d))[1], data))
    answers = [answer for chat in chats for answer, _ in chat.answers]
    assert answers.count("Already done.") == 1
    (shown,) = seen.thens  # only the winner's screen
    assert step() == ("tip", "confirm", {"amount": int(shown.split()[1])})  # and it shows what was stored


def test_the_telegram_plumbing_imports_nothing_from_the_bot():
    """Layers point one way: depu.bot uses depu.telegram; the shared types live in depu.chat."""
    import ast
    from pathlib import Path

    import depu.telegram

    offenders = []
    for path in Path(depu.telegram.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {name}" for name in names if name == "depu.bot" or name.startswith("depu.bot.")]
    assert offenders == []
