"""A small Bot API double for tests: a real HTTP server on 127.0.0.1 that records every call.

It behaves like Telegram where our client's logic depends on it: ``{"ok": ..., "result"|"description"}``
bodies, 401 for a wrong token, a 400 "message is not modified" for an identical edit, message ids that
grow, multipart uploads, and files served under ``/file/bot<token>/<path>``. Tests script failures
(429 with ``retry_after``, 5xx) per method with ``fail_next``.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)


class FakeTelegram:
    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.texts: dict[tuple[int, int], str] = {}
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, content)
        self.webhook_url: str | None = None
        self._failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._next_message_id = 100
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                fake._handle_post(self)

            def do_GET(self) -> None:  # noqa: N802
                fake._handle_get(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeTelegram":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ scripting
    def fail_next(self, method: str, status: int, body: dict[str, Any], times: int = 1) -> None:
        with self._lock:
            self._failures.setdefault(method, []).extend([(status, body)] * times)

    def add_file(self, file_id: str, file_path: str, content: bytes) -> None:
        self.files[file_id] = (file_path, content)

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    # ------------------------------------------------------------------ HTTP
    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any] | bytes) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "application/octet-stream")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)

    def _handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        prefix = f"/file/bot{self.token}/"
        if not handler.path.startswith(prefix):
            self._send(handler, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        path = handler.path[len(prefix):]
        for file_path, content in self.files.values():
            if file_path == path:
                self._send(handler, 200, content)
                return
        self._send(handler, 404, {"ok": False, "error_code": 404, "description": "Not Found"})

    def _handle_post(self, handler: BaseHTTPRequestHandler) -> None:
        parts = handler.path.strip("/").split("/")
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        if len(parts) != 2 or parts[0] != f"bot{self.token}":
            self._send(handler, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            return
        method = parts[1]
        params, files = self._parse(handler.headers.get("Content-Type", ""), raw)
        with self._lock:
            self.calls.append(Call(method, params, files))
            scripted = self._failures.get(method)
            if scripted:
                status, body = scripted.pop(0)
                self._send(handler, status, body)
                return
            status, body = self._answer(method, params)
        self._send(handler, status, body)

    @staticmethod
    def _parse(content_type: str, raw: bytes) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
        if content_type.startswith("multipart/form-data"):
            message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
            params: dict[str, Any] = {}
            files: dict[str, tuple[str, bytes]] = {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                filename = part.get_filename()
                payload = part.get_payload(decode=True) or b""
                if filename:
                    files[name] = (filename, payload)
                else:
                    params[name] = payload.decode()
            return params, files
        return (json.loads(raw) if raw else {}), {}

    def _ok(self, result: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "result": result}

    def _answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method in ("sendMessage", "sendPhoto", "sendDocument"):
            self._next_message_id += 1
            chat_id = int(params["chat_id"])
            self.texts[(chat_id, self._next_message_id)] = str(params.get("text", params.get("caption", "")))
            return self._ok({"message_id": self._next_message_id, "chat": {"id": chat_id}})
        if method == "editMessageText":
            key = (int(params["chat_id"]), int(params["message_id"]))
            if key not in self.texts:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message to edit not found"}
            if self.texts[key] == params["text"]:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is not modified: "
                             "specified new message content and reply markup are exactly the same"}
            self.texts[key] = params["text"]
            return self._ok(True)
        if method == "getFile":
            found = self.files.get(params.get("file_id", ""))
            if not found:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
            return self._ok({"file_id": params["file_id"], "file_path": found[0], "file_size": len(found[1])})
        if method == "setWebhook":
            self.webhook_url = params.get("url")
            return self._ok(True)
        if method == "getWebhookInfo":
            return self._ok({"url": self.webhook_url or "", "has_custom_certificate": False, "pending_update_count": 0})
        if method in ("answerCallbackQuery", "setMyCommands", "deleteWebhook"):
            return self._ok(True)
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
