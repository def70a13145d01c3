"""getFile: where the bot downloads a file the user sent (``/file/bot<token>/<file_path>``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from local.telegram_standin.methods import bot_method
from local.telegram_standin.models import ApiError
from local.telegram_standin.validation import MAX_DOWNLOAD

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn


@bot_method("getFile")
def get_file(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
    stored = standin.files.get(str(params.get("file_id") or ""))
    if stored is None:
        raise ApiError(400, "Bad Request: invalid file_id")
    if len(stored.content) > MAX_DOWNLOAD:
        raise ApiError(400, "Bad Request: file is too big")
    return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content), "file_path": stored.file_path}
