"""Talk to the local bot from a terminal, as if from the Telegram app.

It drives the Telegram stand-in's control API (another process, started by ``python -m local up``): each line
typed is the user's message, a number presses that button of the latest bot message with buttons, ``/file
PATH`` sends a document. The bot's messages are printed as plain text (HTML removed), edits are marked
"(edited)", photos and documents are saved under .local/downloads. With stdin piped it sends each line, waits
for the bot to go quiet, and exits at the end of input, so tests and scripts can use it too.
"""
from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import requests

from local.telegram_html import to_plain_text
from local.template import ROOT

STACK_FILE = ROOT / ".local" / "stack.json"
DEFAULT_STANDIN = "http://127.0.0.1:8081"
DEFAULT_USER_ID = 4242001


class ChatSession:
    """The user's side of one private chat with the bot."""

    def __init__(self, standin_url: str, user_id: int, first_name: str, downloads: Path, out: TextIO = sys.stdout):
        self.standin = standin_url.rstrip("/")
        self.user_id = user_id
        self.first_name = first_name
        self.downloads = downloads
        self.out = out
        self.http = requests.Session()
        self.after = 0
        self.last_buttons: tuple[int, list[dict[str, str]]] | None = None  # message id, buttons in order
        self.last_activity = time.monotonic()
        self._print_lock = threading.Lock()
        self._stop = threading.Event()

    # ------------------------------------------------------------------ user actions
    def handle_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        if line.isdigit() and self.last_buttons:
            return self.press(int(line))
        if line.startswith("/file"):
            return self.send_file(line[len("/file"):].strip())
        self._post("say", {"text": line})

    def press(self, number: int) -> None:
        message_id, buttons = self.last_buttons or (0, [])
        if not 1 <= number <= len(buttons):
            return self._say(f"(no button {number}; the last message has {len(buttons)})")
        button = buttons[number - 1]
        if "url" in button:
            return self._say(f"(link: {button['url']})")
        if button.get("pay"):
            return self.pay(message_id)
        self._post("press", {"message_id": message_id, "data": button["callback_data"]})

    def pay(self, message_id: int) -> None:
        """The Pay button of an invoice: Telegram asks the bot first and shows its refusal, if any."""
        try:
            response = self.http.post(f"{self.standin}/_standin/pay", timeout=90, json={
                "chat_id": self.user_id, "user_id": self.user_id, "message_id": message_id})
        except requests.RequestException:
            return self._say(f"(cannot reach the Telegram stand-in at {self.standin}: is `make up` running?)")
        reply = response.json() if response.headers.get("Content-Type") == "application/json" else {}
        if response.status_code != 200:
            return self._say(f"({reply.get('error', response.status_code)})")
        answer = reply.get("pre_checkout") or {}
        if reply.get("paid"):
            self._say("(paid with Telegram Stars)")
        else:
            self._say(f"(payment declined: {answer.get('error_message') or 'the bot did not answer in time'})")
        self.last_activity = time.monotonic()

    def send_file(self, path_text: str) -> None:
        path = Path(path_text).expanduser()
        if not path.is_file():
            return self._say(f"(no such file: {path_text})")
        self._post("document", {
            "filename": path.name,
            "content_base64": base64.b64encode(path.read_bytes()).decode(),
            "mime_type": mimetypes.guess_type(path.name)[0] or "application/octet-stream",
        })

    def _post(self, action: str, body: dict[str, Any]) -> None:
        body = {"chat_id": self.user_id, "user_id": self.user_id, "first_name": self.first_name, **body}
        self.last_activity = time.monotonic()
        try:
            response = self.http.post(f"{self.standin}/_standin/{action}", json=body, timeout=90)
        except requests.RequestException:
            return self._say(f"(cannot reach the Telegram stand-in at {self.standin}: is `make up` running?)")
        reply = response.json() if response.headers.get("Content-Type") == "application/json" else {}
        if response.status_code != 200:
            return self._say(f"({reply.get('error', response.status_code)})")
        status = reply.get("webhook_status")
        if status is None:
            self._say("(the bot has no webhook registered yet: is `make up` running?)")
        elif status >= 300:
            self._say(f"(the bot's webhook answered HTTP {status})")
        self.last_activity = time.monotonic()

    # ------------------------------------------------------------------ the bot's side
    def poll_once(self, wait: float) -> int:
        """Print what the bot did since the last poll; returns how many events there were."""
        response = self.http.get(
            f"{self.standin}/_standin/updates",
            params={"chat": self.user_id, "after": self.after, "wait": wait},
            timeout=wait + 10,
        )
        response.raise_for_status()
        payload = response.json()
        for event in payload["events"]:
            self.show(event)
        self.after = payload["last"]
        if payload["events"]:
            self.last_activity = time.monotonic()
        return len(payload["events"])

    def show(self, event: dict[str, Any]) -> None:
        if event["kind"] == "callback_answer":
            answer = event["answer"]
            if answer.get("text"):
                self._say(f"{'(alert) ' if answer.get('show_alert') else ''}({answer['text']})")
            return
        message = event["message"]
        if not message["from_bot"] or event["kind"] == "deleted":
            return
        label = "bot (edited)" if event["kind"] == "edited" else "bot"
        lines = []
        text = to_plain_text(message.get("html") or message["text"], "HTML" if message.get("html") else None)
        if text:
            lines.append(text)
        if message.get("photo"):
            lines.append(f"[photo saved to {self._download(message['photo'], 'photo.png')}]")
        if message.get("document"):
            document = message["document"]
            lines.append(f"[document saved to {self._download(document['file_id'], document['file_name'])}]")
        if message.get("invoice"):
            invoice = message["invoice"]
            lines.append(f"[invoice: {invoice['total_amount']} {invoice['currency']}]")
        buttons = [button for row in message.get("buttons") or [] for button in row]
        for number, button in enumerate(buttons, start=1):
            suffix = f" -> {button['url']}" if "url" in button else ""
            lines.append(f"  [{number}] {button['text']}{suffix}")
        if buttons:
            self.last_buttons = (message["message_id"], buttons)
        self._say(f"{label}: " + "\n".join(lines))

    def _download(self, file_id: str, filename: str) -> Path:
        response = self.http.get(f"{self.standin}/_standin/files/{file_id}", timeout=30)
        response.raise_for_status()
        name = re.sub(r"[^A-Za-z0-9._-]", "_", response.headers.get("X-File-Name") or filename) or "file"
        self.downloads.mkdir(parents=True, exist_ok=True)
        target = self.downloads / name
        stem, suffix, counter = target.stem, target.suffix, 1
        while target.exists():
            target = self.downloads / f"{stem}-{counter}{suffix}"
            counter += 1
        target.write_bytes(response.content)
        return target

    def _say(self, text: str) -> None:
        with self._print_lock:
            print(text, file=self.out, flush=True)

    # ------------------------------------------------------------------ loops
    def follow(self) -> None:
        """Background printer for interactive use."""
        while not self._stop.is_set():
            try:
                self.poll_once(wait=2.0)
            except requests.RequestException:
                self._stop.wait(1.0)

    def settle(self, quiet: float, limit: float) -> None:
        """Wait until the bot has said nothing for ``quiet`` seconds (at most ``limit`` seconds)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.poll_once(wait=min(quiet, max(0.0, deadline - time.monotonic()))) == 0 and \
                    time.monotonic() - self.last_activity >= quiet:
                return

    def stop(self) -> None:
        self._stop.set()

    def resume(self) -> None:
        """Pick up an earlier conversation: show the bot's last message, so its button numbers work again."""
        history = self.http.get(f"{self.standin}/_standin/updates", params={"chat": self.user_id, "after": 0},
                                timeout=10).json()
        latest: dict[str, dict[str, Any]] = {}
        for event in history["events"]:
            if event.get("message") and event["message"]["from_bot"] and event["kind"] in ("message", "edited"):
                latest[str(event["message"]["message_id"])] = event
        with_buttons = [event for event in latest.values() if event["message"].get("buttons")]
        if with_buttons:
            last = max(with_buttons, key=lambda event: event["seq"])
            self._say("(earlier in this chat; its buttons can be pressed by number)")
            self.show({**last, "kind": "message"})
        self.after = history["last"]

    def wait_until_ready(self, limit: float) -> dict[str, Any]:
        """The stand-in's state once the bot's webhook is registered (`make up` may still be starting)."""
        deadline = time.monotonic() + limit
        told = False
        while True:
            state = self.http.get(f"{self.standin}/_standin/state", timeout=5).json()
            if state["webhook_registered"] or time.monotonic() > deadline:
                return state
            if not told:
                print("(waiting for the bot to start...)", file=sys.stderr, flush=True)
                told = True
            time.sleep(0.3)


def _stack_setting(name: str) -> str | None:
    try:
        return json.loads(STACK_FILE.read_text(encoding="utf-8")).get(name)
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local chat", description=__doc__.splitlines()[0])
    parser.add_argument("--standin", default=os.environ.get("DEPU_STANDIN_URL") or _stack_setting("standin_url")
                        or DEFAULT_STANDIN, help="URL of the Telegram stand-in (default: from .local/stack.json)")
    parser.add_argument("--user-id", type=int, default=int(os.environ.get("DEPU_CHAT_USER_ID", DEFAULT_USER_ID)))
    parser.add_argument("--name", default=os.environ.get("USER", "Local").title() or "Local")
    parser.add_argument("--downloads", type=Path, default=ROOT / ".local" / "downloads")
    parser.add_argument("--quiet-seconds", type=float, default=1.5,
                        help="piped input: how long the bot must be silent before the next line is sent")
    parser.add_argument("--reply-timeout", type=float, default=30.0)
    parser.add_argument("--linger", type=float, default=0.0,
                        help="piped input: keep showing the bot's messages this many seconds after the last line "
                             "(e.g. to see a job finish)")
    args = parser.parse_args(argv)

    session = ChatSession(args.standin, args.user_id, args.name, args.downloads)
    try:
        state = session.wait_until_ready(args.reply_timeout)
    except requests.RequestException:
        print(f"cannot reach the Telegram stand-in at {session.standin}: run `make up` first", file=sys.stderr)
        return 2
    session.resume()

    interactive = sys.stdin.isatty()
    if interactive:
        print("Chatting with the local bot. Type a message, a button number, `/file PATH`, or Ctrl-D to leave.")
        printer = threading.Thread(target=session.follow, name="chat-printer", daemon=True)
        printer.start()
    try:
        for line in sys.stdin:
            session.handle_line(line)
            if not interactive:
                session.settle(args.quiet_seconds, args.reply_timeout)
        if not interactive and args.linger > 0:
            deadline = time.monotonic() + args.linger
            while time.monotonic() < deadline:
                session.poll_once(wait=min(2.0, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        session.stop()
    return 0
