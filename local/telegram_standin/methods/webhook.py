"""Where updates go: the webhook, or getUpdates while there is none."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from local.telegram_standin.methods import bot_method
from local.telegram_standin.models import ApiError
from local.telegram_standin.validation import SECRET_TOKEN, truthy

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn


@bot_method("setWebhook")
def set_webhook(standin: TelegramStandIn, params: dict[str, Any]) -> bool:
    url = str(params.get("url") or "")
    secret = params.get("secret_token")
    if url and not url.startswith(("http://", "https://")):
        raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
    if secret is not None and not SECRET_TOKEN.fullmatch(str(secret)):
        raise ApiError(400, "Bad Request: secret token contains unallowed characters")
    standin.webhook_url = url or None
    standin.webhook_secret = str(secret) if secret and url else None
    if truthy(params.get("drop_pending_updates")):
        standin.pending_updates.clear()
    if standin.webhook_url and standin.pending_updates:
        # Telegram keeps updates until a webhook exists, then delivers them in order
        pending, standin.pending_updates = standin.pending_updates, []
        threading.Thread(target=_deliver_pending, args=(standin, pending), name="depu-local-telegram-pending",
                         daemon=True).start()
    return True


def _deliver_pending(standin: TelegramStandIn, updates: list[dict[str, Any]]) -> None:
    for update in updates:
        standin.post_update(update)


@bot_method("deleteWebhook")
def delete_webhook(standin: TelegramStandIn, params: dict[str, Any]) -> bool:
    standin.webhook_url, standin.webhook_secret = None, None
    if truthy(params.get("drop_pending_updates")):
        standin.pending_updates.clear()
    return True


@bot_method("getWebhookInfo")
def get_webhook_info(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
    return {"url": standin.webhook_url or "", "has_custom_certificate": False,
            "pending_update_count": len(standin.pending_updates)}


@bot_method("getUpdates")
def get_updates(standin: TelegramStandIn, params: dict[str, Any]) -> list[dict[str, Any]]:
    if standin.webhook_url:
        raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                            "use deleteWebhook to delete the webhook first")
    offset = int(params.get("offset") or 0)
    standin.pending_updates = [u for u in standin.pending_updates if u["update_id"] >= offset]
    return standin.pending_updates[: int(params.get("limit") or 100)]
