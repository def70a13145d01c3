"""The Bot API methods the stand-in answers: a registry filled by the modules of this package.

Adding a method is one new module here::

    from local.telegram_standin.methods import bot_method

    @bot_method("sendInvoice")
    def send_invoice(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
        ...  # validate with local.telegram_standin.validation, record with standin.record_bot_message

Every module of this package is imported when the registry is first used, so nothing else needs to name the
new one. A handler runs under the stand-in's lock and returns the method's ``result``; an
``ApiError`` becomes Telegram's error answer. Uploaded files are in ``params["__files__"]``
(``standin.input_file`` reads them). Names are case-insensitive, as in Telegram.
"""
from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn

MethodHandler = Callable[["TelegramStandIn", dict[str, Any]], Any]

_methods: dict[str, MethodHandler] = {}
_loaded = False
_load_lock = threading.Lock()


def bot_method(name: str) -> Callable[[MethodHandler], MethodHandler]:
    """Register ``handler`` as the stand-in's answer to Bot API method ``name``."""

    def register(handler: MethodHandler) -> MethodHandler:
        key = name.lower()
        if key in _methods and _methods[key] is not handler:
            raise ValueError(f"Bot API method {name} is registered twice")
        _methods[key] = handler
        return handler

    return register


def find(name: str) -> MethodHandler | None:
    _load_all()
    return _methods.get(name.lower())


def names() -> list[str]:
    _load_all()
    return sorted(_methods)


def _load_all() -> None:
    global _loaded
    with _load_lock:
        if _loaded:
            return
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True
