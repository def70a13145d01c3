"""The stand-in's HTTP side: ``/bot<token>/<method>``, ``/file/bot<token>/<path>`` and ``/_standin/...``."""
from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local.telegram_standin.control import UnknownControl, control
from local.telegram_standin.models import ApiError
from local.telegram_standin.multipart import parse_body

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn


def request_handler(standin: TelegramStandIn) -> type[BaseHTTPRequestHandler]:
    class BotApiHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # see local/runtime/api_gateway.py: no 40 ms stall between headers and body
        server_version = "DePU-telegram-standin"

        def _handle(self) -> None:
            split = urlsplit(self.path)
            path = unquote(split.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if path.startswith("/_standin/"):
                return self._control(path[len("/_standin/"):], dict(parse_qsl(split.query)), body)
            if path.startswith("/file/bot"):
                return self._download(path[len("/file/bot"):])
            found = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", path)
            if not found:
                return self._api_error(ApiError(404, "Not Found"))
            token, method = found.groups()
            if token != standin.bot_token:
                return self._api_error(ApiError(401, "Unauthorized"))
            try:
                params = dict(parse_qsl(split.query))
                form, files = parse_body(self.headers.get("Content-Type", ""), body)
                params.update(form)
                if files:
                    params["__files__"] = files
                result = standin.handle_api_call(method, params)
            except ApiError as error:
                return self._api_error(error)
            except ValueError:
                return self._api_error(ApiError(400, "Bad Request: can't parse request"))
            reply: dict[str, Any] = {"ok": True, "result": result}
            if method.lower() == "setwebhook":
                reply["description"] = "Webhook was set" if standin.webhook_url else "Webhook was deleted"
            elif method.lower() == "deletewebhook":
                reply["description"] = "Webhook was deleted"
            self._json(200, reply)

        def _download(self, rest: str) -> None:
            token, _, file_path = rest.partition("/")
            if token != standin.bot_token:
                return self._json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            stored = standin.file_at(file_path)
            if stored is None:
                return self._json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            self._send(200, stored.content, stored.mime_type)

        def _control(self, action: str, query: dict[str, str], body: bytes) -> None:
            if action.startswith("files/") and self.command == "GET":
                with standin.lock:
                    stored = standin.files.get(action[len("files/"):])
                if stored is None:
                    return self._json(404, {"error": "no such file"})
                return self._send(200, stored.content, stored.mime_type, {"X-File-Name": stored.file_name})
            try:
                payload = json.loads(body) if body else {}
                result = control(standin, self.command, action, query, payload)
            except UnknownControl as error:
                return self._json(404, {"error": f"unknown control request {error}"})
            except KeyError as error:
                return self._json(400, {"error": f"missing field {error}"})
            except (ValueError, TypeError) as error:
                return self._json(400, {"error": str(error)})
            self._json(200, result)

        def _api_error(self, error: ApiError) -> None:
            self._json(error.code, error.answer())

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: int, payload: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - never log paths: they hold the token
            pass

    return BotApiHandler
