"""The bot itself: getMe and its command menu."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from local.telegram_standin.methods import bot_method
from local.telegram_standin.models import ApiError
from local.telegram_standin.validation import BOT_COMMAND, json_param

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn


@bot_method("getMe")
def get_me(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
    return {"id": standin.bot_id, "is_bot": True, "first_name": "DePU", "username": standin.bot_username,
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}


@bot_method("setMyCommands")
def set_my_commands(standin: TelegramStandIn, params: dict[str, Any]) -> bool:
    commands = json_param(params.get("commands"), "commands")
    if not isinstance(commands, list) or len(commands) > 100:
        raise ApiError(400, "Bad Request: can't parse commands JSON object")
    for item in commands:
        if not isinstance(item, dict) or not BOT_COMMAND.fullmatch(str(item.get("command", ""))):
            raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        if not 1 <= len(str(item.get("description", "")).strip()) <= 256:
            raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
    standin.commands = [{"command": c["command"], "description": c["description"]} for c in commands]
    return True


@bot_method("getMyCommands")
def get_my_commands(standin: TelegramStandIn, params: dict[str, Any]) -> list[dict[str, str]]:
    return list(standin.commands)
