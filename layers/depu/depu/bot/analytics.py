"""``/analytics``, ``/watch``, ``/unwatch``, ``/export`` and ``/dashboard``: chain analytics in the chat.

Each view is a short text summary with window buttons (1h / 24h / 7d) followed by a chart as a photo. Callback
data is ``an:1:<view>:<window>[:<address>]`` (at most 53 bytes); the table ``ANALYTICS`` (``depu.bot.flows``)
maps each view to its handler, and its one step (``address``) takes the address typed after "Address". Charts import matplotlib only when drawn, and
nothing here imports web3 or pyarrow, so the webhook's cold start stays light.
"""
from __future__ import annotations

import html
from decimal import Decimal

from depu import conversation
from depu.analytics import views, watches
from depu.analytics.labels import tx_link
from depu.analytics.amounts import fmt
from depu.analytics.metadata import TokenMeta
from depu.bot import flows
from depu.bot.flows import ANY, TEXT, Flow, Next, Turn, button
from depu.bot.registry import Button, Chat, Command, Feature, Incoming, Keyboard
from depu.bot.screens import show
from depu.bot.sections import Section
from depu.errors import UserError

PREFIX = "an"
FLOW = "analytics"  # one step: waiting for a typed address after the "Address" button
WINDOW_LABELS = {"1h": "1 h", "24h": "24 h", "7d": "7 days"}


def _button(label: str, *parts: object) -> Button:
    return Button(label, data=conversation.encode(PREFIX, *parts))


def _short(address: str) -> str:
    return address[:8] + "…" + address[-6:]


def _windows(view: str, current: str, address: str | None = None) -> Keyboard:
    row = [_button(("• " if window == current else "") + label, view, window, *([address] if address else []))
           for window, label in WINDOW_LABELS.items()]
    return [row, [_button("◀ Analytics menu", "m")]]


def _amount(amount: int, meta: TokenMeta | None, asset: str) -> str:
    if meta is None:
        return fmt(amount, None, _short(asset))
    return fmt(amount, meta.decimals, meta.label)


def _usd(value) -> str:
    """`` (≈ $1,234.56)`` where a dollar value exists (time-weighted on-chain price), else nothing."""
    return f" (≈ ${value:,.2f})" if value is not None else ""


def _names(incoming: Incoming):
    from depu.analytics.labels import Names

    return Names(incoming.user_id)


def _who(names, address: str) -> str:
    """A short address in code, with the user's (or the address book's) label beside it."""
    label = names.label(address)
    return f"<code>{_short(address)}</code>" + (f" ({html.escape(label)})" if label else "")


# ---------------------------------------------------------------- menu
def analytics(incoming: Incoming, chat: Chat) -> None:
    target = incoming.args.strip()
    if target:
        address = _address(target)
        meta = views.metadata.cached(address)
        if meta is not None:
            token_view(incoming, chat, address, "24h")
        else:
            address_view(incoming, chat, address, "24h")
        return
    _menu(incoming, chat)


def _menu(incoming: Incoming, chat: Chat) -> None:
    head = views.chain_time()
    status = "Nothing indexed yet: the indexer starts within a minute." if head is None else "Live, from indexed blocks."
    show(incoming, chat,
          "<b>Chain analytics</b>\n" + status + "\n\n"
          "• <b>Chain</b>: blocks, gas, activity\n"
          "• <b>Tokens</b>: volume, active addresses, top transfers\n"
          "• <b>Address</b>: send <code>/analytics 0xADDRESS</code>\n\n"
          "Alerts: <code>/watch 0xADDRESS [min amount]</code> · Files: <code>/export</code>",
          [[_button("⛓ Chain", "c", "1h"), _button("🪙 Tokens", "tl"), _button("🔎 Address", "ask")]])


def _address(text: str) -> str:
    try:
        return watches.parse_address(text)
    except watches.WatchError as error:
        raise UserError(html.escape(str(error))) from None


def _window(turn: Turn) -> str:
    return turn.args[0] if turn.args and turn.args[0] in views.WINDOWS else "24h"


def menu_view(turn: Turn) -> None:
    _menu(turn.incoming, turn.chat)


def chain_button(turn: Turn) -> None:
    chain_view(turn.incoming, turn.chat, _window(turn))


def tokens_button(turn: Turn) -> None:
    token_list(turn.incoming, turn.chat)


def token_button(turn: Turn) -> None:
    token_view(turn.incoming, turn.chat, _address(turn.arg(1)), _window(turn))


def address_button(turn: Turn) -> None:
    address_view(turn.incoming, turn.chat, _address(turn.arg(1)), _window(turn))


def ask_address(turn: Turn) -> Next:
    from depu.profiles import ensure_profile

    incoming = turn.incoming
    ensure_profile(incoming.user_id, incoming.first_name, incoming.username, incoming.language_code)
    return flows.begin_step("address", then=lambda turn: turn.show(
        "Send the address (0x followed by 40 hex characters), a wallet or a token.", [[_button("◀ Analytics menu", "m")]]))


def typed_address(turn: Turn) -> Next | None:
    """The address typed after pressing "Address"; a typo keeps the flow open for another try."""
    try:
        address = watches.parse_address(turn.incoming.text)
    except watches.WatchError as error:
        turn.reply(html.escape(str(error)) + " Try again, or send /analytics for the menu.")
        return None

    def open_view(turn: Turn) -> None:
        if views.metadata.cached(address) is not None:
            token_view(turn.incoming, turn.chat, address, "24h")
        else:
            address_view(turn.incoming, turn.chat, address, "24h")

    return flows.end(then=open_view)


ANALYTICS = Flow(
    name=FLOW, prefix=PREFIX, restart="/analytics", ttl_seconds=600,
    answer_first=True,  # the views draw charts: stop the button's spinner first
    steps={
        (ANY, button("m")): menu_view,
        (ANY, button("c")): chain_button,
        (ANY, button("tl")): tokens_button,
        (ANY, button("t")): token_button,
        (ANY, button("a")): address_button,
        (ANY, button("ask")): ask_address,
        ("address", TEXT): typed_address,
    },
)


# ---------------------------------------------------------------- views
def chain_view(incoming: Incoming, chat: Chat, window: str) -> None:
    from depu.analytics import charts

    view = views.chain_view(window)
    if not view.blocks:
        show(incoming, chat, "No blocks indexed in this window yet.", _windows("c", window))
        return
    gwei = Decimal(10**9)
    span = f"newest {len(view.blocks):,} blocks" if view.capped else f"last {WINDOW_LABELS[window]}"
    text = (f"<b>Chain, {span}</b> (up to block {view.head})\n"
            f"Blocks: {len(view.blocks):,} · transactions: {view.txs:,} · transfers: {view.transfers:,}\n"
            f"Gas used per block: {view.average('gas_used'):,.0f} "
            f"({100 * view.average('gas_used') / max(view.average('gas_limit'), 1):.1f}% of the limit)\n"
            f"Base fee now: {Decimal(int(view.blocks[-1]['base_fee'])) / gwei:.3f} gwei · "
            f"median tip: {Decimal(int(view.blocks[-1]['tip_median'])) / gwei:.3f} gwei")
    show(incoming, chat, text, _windows("c", window))
    numbers = [int(b["number"]) for b in view.blocks]
    chart = charts.series_chart(
        f"Gas and fees, last {WINDOW_LABELS[window]}", numbers,
        {"base fee (gwei)": [int(b["base_fee"]) / 1e9 for b in view.blocks],
         "median tip (gwei)": [int(b["tip_median"]) / 1e9 for b in view.blocks]}, "gwei")
    chat.send_photo(chart, f"Base fee and median priority fee per block, blocks {numbers[0]}–{numbers[-1]}")


def token_list(incoming: Incoming, chat: Chat) -> None:
    tokens = views.known_tokens()
    if not tokens:
        show(incoming, chat, "No tokens seen yet.", [[_button("◀ Analytics menu", "m")]])
        return
    rows = [[_button(f"{meta.label} · {_short(meta.token)}", "t", "24h", meta.token)] for meta in tokens]
    rows.append([_button("◀ Analytics menu", "m")])
    show(incoming, chat, "<b>Tokens</b>: choose one (or send <code>/analytics 0xTOKEN</code>).", rows)


def token_view(incoming: Incoming, chat: Chat, token: str, window: str) -> None:
    from depu.analytics import charts

    view = views.token_view(token, window)
    meta = view.meta
    name = html.escape(meta.label if meta else _short(token))
    names = _names(incoming)
    lines = [f"<b>{name}</b> <code>{token}</code>, last {WINDOW_LABELS[window]}",
             f"Transfers: {view.transfers:,} · volume: {html.escape(_amount(view.volume, meta, token))}"
             f"{_usd(view.volume_usd)}",
             f"Active addresses: {view.active_addresses:,}"]
    if view.price_usd is not None:
        lines.append(f"Price: ${view.price_usd:,.4f} (30-minute time-weighted, on-chain)")
    if meta and meta.decimals is None:
        lines.append("<i>This token does not report decimals: amounts are in base units.</i>")
    if view.top_transfers:
        lines.append("\n<b>Top transfers</b>")
        for row in view.top_transfers:
            lines.append(f"{html.escape(_amount(int(row['amount']), meta, token))}{_usd(view.usd(int(row['amount'])))}: "
                         f"{_who(names, row['sender'])} → {_who(names, row['recipient'])} "
                         f"(block {row['block_number']}, {tx_link(row['tx_hash'])})")
    if view.top_movers:
        lines.append("\n<b>Top movers</b> (sent + received)")
        for address, moved in view.top_movers:
            lines.append(f"{_who(names, address)} {html.escape(_amount(moved, meta, token))}{_usd(view.usd(moved))}")
    show(incoming, chat, "\n".join(lines), _windows("t", window, token))
    axis = view.axis  # dollars where a price exists, else token units: the label and captions say which
    hours = [hour for hour, _, _ in view.series]
    chart = charts.draw_flows(f"{meta.label if meta else _short(token)} volume per hour", hours,
                              [axis.value(volume) for _, volume, _ in view.series], [0.0] * len(hours), axis.label)
    chat.send_photo(chart.png, f"{name}: volume per hour in {axis.unit}, last {WINDOW_LABELS[window]}")
    if view.top_movers:
        movers = charts.draw_bars(f"{meta.label if meta else _short(token)}: top movers",
                                  [names.label(address) or _short(address) for address, _ in view.top_movers],
                                  [axis.value(moved) for _, moved in view.top_movers], axis.label)
        chat.send_photo(movers.png, f"{name}: top movers (sent + received) in {axis.unit}, "
                                    f"last {WINDOW_LABELS[window]}")


def address_view(incoming: Incoming, chat: Chat, address: str, window: str) -> None:
    from depu.analytics import charts

    view = views.address_view(address, window)
    names = _names(incoming)
    label = names.label(address)
    lines = [f"<b>Address</b> <code>{address}</code>" + (f" ({html.escape(label)})" if label else "")]
    if not view.seen:
        lines.append("No transfers seen for this address since indexing began.")
        show(incoming, chat, "\n".join(lines), _windows("a", window, address))
        return
    lines.append("\n<b>Seen since indexing began</b> (in / out / net)")
    for flow in view.seen[:8]:
        lines.append(f"{html.escape(_amount(flow.inflow, flow.meta, flow.asset))} / "
                     f"{html.escape(_amount(flow.outflow, flow.meta, flow.asset))} / "
                     f"{'-' if flow.net < 0 else ''}{html.escape(_amount(abs(flow.net), flow.meta, flow.asset))}"
                     f"{_usd(flow.usd(flow.net))}")
    lines.append(f"\n<b>Last {WINDOW_LABELS[window]}</b>")
    if not view.flows:
        lines.append("No transfers in this window.")
    for flow in view.flows[:8]:
        lines.append(f"{flow.transfers} transfers: in {html.escape(_amount(flow.inflow, flow.meta, flow.asset))}"
                     f"{_usd(flow.usd(flow.inflow))}, out {html.escape(_amount(flow.outflow, flow.meta, flow.asset))}"
                     f"{_usd(flow.usd(flow.outflow))}")
    if view.counterparties:
        lines.append("\n<b>Top counterparties</b>")
        for asset, other, sent, received, count in view.counterparties[:5]:
            meta = views.metadata.cached(asset)
            lines.append(f"{_who(names, other)}: {count}× · sent {html.escape(_amount(sent, meta, asset))}"
                         f" · received {html.escape(_amount(received, meta, asset))}")
    show(incoming, chat, "\n".join(lines), _windows("a", window, address))
    busiest = view.flows[0] if view.flows else None
    if busiest is not None:
        series = sorted(view.series[busiest.asset])
        label = busiest.meta.label if busiest.meta else _short(busiest.asset)
        axis = busiest.axis
        chart = charts.draw_flows(f"{_short(address)}: {label} per hour", [h for h, _, _ in series],
                                  [axis.value(i) for _, i, _ in series], [axis.value(o) for _, _, o in series],
                                  axis.label)
        chat.send_photo(chart.png, f"{html.escape(label)} in and out per hour in {axis.unit}, "
                                   f"last {WINDOW_LABELS[window]}")


# ---------------------------------------------------------------- watches
def watch(incoming: Incoming, chat: Chat) -> None:
    parts = incoming.args.split()
    if not parts:
        mine = watches.of_user(incoming.user_id)
        if not mine:
            chat.reply("Usage: <code>/watch 0xADDRESS [min amount]</code>\nYou watch no address yet.")
            return
        lines = ["<b>Your watches</b>"] + [
            f"<code>{item['sk']}</code> (min "
            + (f"${html.escape(str(item['min_usd']))}" if item.get("min_usd") is not None
               else html.escape(str(item["min_amount"]))) + ")"
            for item in mine]
        chat.reply("\n".join(lines) + "\n\nRemove one with <code>/unwatch 0xADDRESS</code>.")
        return
    if len(parts) > 2:
        raise UserError("Usage: <code>/watch 0xADDRESS [min amount]</code>, or a dollar minimum: "
                        "<code>/watch 0xADDRESS 10000$</code>")
    try:
        address = watches.parse_address(parts[0])
        minimum, in_usd = watches.parse_threshold(parts[1]) if len(parts) == 2 else (Decimal(0), False)
    except watches.WatchError as error:
        raise UserError(str(error)) from None
    added = (watches.add(incoming.user_id, incoming.chat_id, address, Decimal(0), min_usd=minimum) if in_usd
             else watches.add(incoming.user_id, incoming.chat_id, address, minimum))
    if not added:
        raise UserError(f"You already watch {watches.MAX_WATCHES_PER_USER} addresses: /unwatch one first.")
    if in_usd:
        threshold = (f" for moves worth at least ${minimum:,} (time-weighted on-chain price; tokens without a "
                     "price do not alert)")
    else:
        threshold = f" for moves of at least {html.escape(str(minimum))} (tokens or ETH)" if minimum else ""
    chat.reply(f"👀 Watching <code>{address}</code>{threshold}. Alerts arrive here within seconds of "
               "inclusion, marked unconfirmed, and the same message says when they are confirmed.")


def unwatch(incoming: Incoming, chat: Chat) -> None:
    if not incoming.args.strip():
        raise UserError("Usage: <code>/unwatch 0xADDRESS</code> (send /watch to list yours).")
    address = _address(incoming.args.split()[0])
    if watches.remove(incoming.user_id, address):
        chat.reply(f"Stopped watching <code>{address}</code>.")
    else:
        chat.reply(f"You were not watching <code>{address}</code>.")


# ---------------------------------------------------------------- labels
def label(incoming: Incoming, chat: Chat) -> None:
    """``/label`` lists yours; ``/label 0x… name`` names an address for you alone; ``/label 0x…`` removes it."""
    from depu.analytics import labels

    parts = incoming.args.split(maxsplit=1)
    if not parts:
        mine = labels.user_labels(incoming.user_id)
        if not mine:
            chat.reply("Usage: <code>/label 0xADDRESS my name for it</code>\nYou have labelled no address yet.")
            return
        chat.reply("<b>Your labels</b>\n" + "\n".join(f"<code>{address}</code> {html.escape(name)}"
                                                     for address, name in sorted(mine.items())))
        return
    address = _address(parts[0])
    if len(parts) == 1:
        removed = labels.remove_label(incoming.user_id, address)
        chat.reply(f"Label of <code>{address}</code> removed." if removed
                   else f"You have no label for <code>{address}</code>.")
        return
    try:
        name = labels.parse_label(parts[1])
        if not labels.set_label(incoming.user_id, address, name):
            raise UserError(f"You already have {labels.MAX_LABELS_PER_USER} labels: remove one first.")
    except labels.LabelError as error:
        raise UserError(str(error)) from None
    chat.reply(f"🏷 <code>{address}</code> is <b>{html.escape(name)}</b> in your views and alerts.")


# ---------------------------------------------------------------- export
def export(incoming: Incoming, chat: Chat) -> None:
    from depu.analytics import export as exports
    from depu.analytics import export_quota

    try:
        request = exports.parse(incoming.args, incoming.user_id, incoming.chat_id)
    except exports.ExportError as error:
        raise UserError(f"{error}\nDatasets: transfers, blocks · formats: csv, jsonl, parquet · "
                        f"at most {exports.MAX_BLOCKS:,} blocks.") from None
    export_quota.acquire(incoming.user_id, request.request_id)  # ExportLimited says which limit and when
    try:
        exports.enqueue(request)
    except Exception:
        export_quota.release(incoming.user_id, request.request_id)
        raise
    chat.reply(f"📦 Preparing {request.dataset} for blocks {request.start}–{request.end} as "
               f"{request.format.upper()}; a progress message follows and the file arrives here when it is done.")


# ---------------------------------------------------------------- dashboard
def dashboard(incoming: Incoming, chat: Chat) -> None:
    from depu.analytics import charts

    usage = _gpu_usage(incoming.user_id)
    forks = _fork_activity(incoming.user_id)
    if not usage and not forks:
        chat.reply("Nothing to chart yet: rent a GPU with /rent_gpu or start a fork with /shadow_fork.")
        return
    if usage:
        labels = list(usage)
        chat.send_photo(charts.bars_chart("Your GPU time by class (minutes)", labels,
                                          [usage[k] / 60 for k in labels], "minutes"),
                        "GPU minutes billed, by GPU class")
    if forks:
        labels = list(forks)
        chat.send_photo(charts.bars_chart("Your forks by status", labels, [forks[k] for k in labels], "forks"),
                        "Your shadow forks, by status")


def _gpu_usage(user_id: int) -> dict[str, int]:
    from depu.jobs import service as jobs

    return jobs.gpu_seconds_by_class(user_id)


def _fork_activity(user_id: int) -> dict[str, int]:
    from depu.forks import service as forks  # not at import: it brings eth_utils, which the cold start need not pay

    counts: dict[str, int] = {}
    for fork in forks.list_forks(user_id):
        counts[fork.status] = counts.get(fork.status, 0) + 1
    return counts


def analytics_profile(user_id: int) -> str:
    mine = watches.of_user(user_id)
    if not mine:
        return "No watched addresses. Try <code>/watch 0xADDRESS</code>."
    return f"Watching {len(mine)} address{'es' if len(mine) != 1 else ''}: " + ", ".join(
        f"<code>{_short(item['sk'])}</code>" for item in mine[:5])


FEATURE = Feature(
    "analytics",
    commands=(
        Command("analytics", "Chain analytics: an address, a token or the chain", analytics),
        Command("watch", "Alert me when an address moves funds: /watch 0xADDRESS [min amount | min$]", watch),
        Command("label", "Name an address for yourself: /label 0xADDRESS name", label),
        Command("unwatch", "Stop alerts for an address: /unwatch 0xADDRESS", unwatch),
        Command("export", "Export transfers or blocks: /export transfers 100-200 csv", export),
        Command("dashboard", "Your GPU usage and fork activity as charts", dashboard),
    ),
    flows=(ANALYTICS,),
    sections=(Section(40, "Analytics", analytics_profile),),
)
