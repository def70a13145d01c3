"""Point the Telegram bot at a deployed DePU stack: publish the command menu and register the webhook.

    python scripts/setup_bot.py --stack-name depu-dev [--region eu-west-1] [--dry-run]
    python scripts/setup_bot.py --webhook-url URL --token-secret NAME --webhook-secret NAME [--api-base URL]

The webhook URL and the two secrets' names come from the stack's outputs (or the arguments). The bot token
and the webhook secret are read from Secrets Manager and sent only to the Bot API: nothing printed here,
``--dry-run`` included, ever shows a secret value.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "depu"))

ALLOWED_UPDATES = ("message", "callback_query", "pre_checkout_query")  # payments: depu.payments


def stack_outputs(stack_name: str, region: str | None) -> dict[str, str]:
    import boto3

    stacks = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}


def read_secret(secret_id: str, region: str | None) -> str:
    import boto3

    return boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=secret_id)["SecretString"]


def menu() -> list[tuple[str, str]]:
    """The commands Telegram shows in its menu: every feature's menu commands, from the registry."""
    from depu.bot.dispatch import load_features

    return [(command.name, command.description) for command in load_features().menu()]


def plan(args: argparse.Namespace) -> dict[str, Any]:
    outputs = stack_outputs(args.stack_name, args.region) if args.stack_name else {}
    settings = {
        "webhook_url": args.webhook_url or outputs.get("WebhookUrl"),
        "token_secret": args.token_secret or outputs.get("TelegramBotTokenSecretArn"),
        "webhook_secret": args.webhook_secret or outputs.get("TelegramWebhookSecretArn"),
    }
    missing = [name for name, value in settings.items() if not value]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: pass --stack-name or the matching arguments")
    if not str(settings["webhook_url"]).startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise SystemExit("Telegram only calls https:// webhooks")
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack-name", help="CloudFormation stack whose outputs name the webhook and secrets")
    parser.add_argument("--region")
    parser.add_argument("--webhook-url")
    parser.add_argument("--token-secret", help="Secrets Manager id of the bot token")
    parser.add_argument("--webhook-secret", help="Secrets Manager id of the webhook secret")
    parser.add_argument("--api-base", default="https://api.telegram.org", help="Bot API base URL")
    parser.add_argument("--drop-pending", action="store_true", help="discard updates queued while no webhook was set")
    parser.add_argument("--dry-run", action="store_true", help="print what would be done; call nothing")
    args = parser.parse_args(argv)

    settings = plan(args)
    commands = menu()
    print(f"webhook:   {settings['webhook_url']}")
    print(f"token:     from secret {settings['token_secret']}")
    print(f"secret:    from secret {settings['webhook_secret']} (sent as X-Telegram-Bot-Api-Secret-Token)")
    print(f"updates:   {', '.join(ALLOWED_UPDATES)}")
    print(f"commands:  {len(commands)}")
    for name, description in commands:
        print(f"  /{name:<16} {description}")
    if args.dry_run:
        print("dry run: nothing was changed")
        return 0

    from depu.telegram.client import BotApi

    api = BotApi(token=read_secret(settings["token_secret"], args.region), base_url=args.api_base)
    api.set_my_commands(commands)
    api.set_webhook(
        settings["webhook_url"],
        secret_token=read_secret(settings["webhook_secret"], args.region),
        allowed_updates=ALLOWED_UPDATES,
        drop_pending_updates=args.drop_pending,
    )
    info = api.get_webhook_info()
    registered = info.get("url") == settings["webhook_url"]
    print(f"webhook registered: {'yes' if registered else 'NO'}; pending updates: {info.get('pending_update_count', 0)}"
          + (f"; Telegram's last delivery error: {info['last_error_message']}" if info.get("last_error_message") else ""))
    if not registered:
        return 1
    print("done: command menu published, webhook registered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
