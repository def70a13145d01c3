"""dispatch() routing with a recording Chat (no AWS, no HTTP): texts, documents, callbacks, errors."""
from __future__ import annotations

import pytest

from depu.bot import dispatch as dispatch_module
from depu.bot.dispatch import dispatch
from depu.bot.registry import Document, Incoming, registry
from depu.errors import UserError
from recording_chat import RecordingChat


@pytest.fixture
def handlers(monkeypatch):
    """Swap the registry's handlers for this test's own (no features installed)."""
    monkeypatch.setattr(dispatch_module, "_loaded", True)
    monkeypatch.setattr(registry, "flows", {})
    monkeypatch.setattr(registry, "texts", [])
    monkeypatch.setattr(registry, "documents", [])
    monkeypatch.setattr(registry, "commands", {})
    monkeypatch.setattr(registry, "callbacks", {})
    return registry


def incoming(**fields) -> Incoming:
    base = {"update_id": 1, "user_id": 5, "chat_id": 5, "chat_type": "private", "message_id": 3}
    return Incoming(**{**base, **fields})


SCRIPT = Document("F1", "train.py", "text/x-python", 120)


def test_text_goes_to_the_first_handler_that_takes_it(handlers) -> None:
    seen: list[str] = []
    handlers.text(lambda inc, chat: seen.append("a") or False)
    handlers.text(lambda inc, chat: seen.append("b") or True)
    handlers.text(lambda inc, chat: seen.append("c") or True)
    chat = RecordingChat()
    assert dispatch(incoming(text="https://data.example/x"), chat, correlation_id="1") == "text"
    assert seen == ["a", "b"] and chat.timeline == []


def test_untaken_text_gets_a_hint_in_private_and_silence_in_groups(handlers) -> None:
    private, group = RecordingChat(), RecordingChat()
    dispatch(incoming(text="hello"), private, correlation_id="1")
    dispatch(incoming(text="hello", chat_id=-9, chat_type="group"), group, correlation_id="2")
    assert private.edits == [] and private.reply_texts == ["Send /help to see what I can do."] and group.timeline == []


def test_documents_can_be_declined_with_false(handlers) -> None:
    order: list[str] = []
    handlers.document(lambda inc, chat: order.append("declines") or False)
    handlers.document(lambda inc, chat: order.append("takes"))  # None: took it
    chat = RecordingChat()
    assert dispatch(incoming(document=SCRIPT), chat, correlation_id="1") == "document"
    assert order == ["declines", "takes"]


def test_a_document_nobody_wants(handlers) -> None:
    handlers.document(lambda inc, chat: False)
    chat = RecordingChat()
    assert dispatch(incoming(document=SCRIPT), chat, correlation_id="1") == "unexpected_document"
    assert "wasn't expecting a file" in chat.timeline[0][0]


def test_a_command_in_a_document_caption_wins(handlers) -> None:
    got: list[Document | None] = []
    handlers.command("rent_gpu", "Rent")(lambda inc, chat: got.append(inc.document))
    handlers.document(lambda inc, chat: pytest.fail("the command should have taken it"))
    dispatch(incoming(document=SCRIPT, command="rent_gpu", text="/rent_gpu"), RecordingChat(), correlation_id="1")
    assert got == [SCRIPT]


def test_user_error_in_a_button_handler_replies_and_stops_the_spinner(handlers) -> None:
    def press(inc, chat):
        raise UserError("That fork is gone.")

    handlers.callback("fork")(press)
    chat = RecordingChat()
    outcome = dispatch(incoming(callback_id="q1", callback_data="fork:del:1"), chat, correlation_id="1")
    assert outcome == "user_error"
    assert chat.edits == [] and chat.reply_texts == ["That fork is gone."] and [text for text, _ in chat.answers] == [None]


def test_apology_escapes_the_reference(handlers) -> None:
    handlers.command("boom", "x")(lambda inc, chat: 1 / 0)
    chat = RecordingChat()
    assert dispatch(incoming(command="boom"), chat, correlation_id="<41>") == "failed"
    assert "ref &lt;41&gt;" in chat.timeline[0][0]


def test_unknown_command_name_is_escaped(handlers) -> None:
    chat = RecordingChat()
    dispatch(incoming(command="x<b>"), chat, correlation_id="1")
    assert chat.edits == [] and chat.reply_texts == ["I don't know /x&lt;b&gt;. Try /help to see what I can do."]
