"""``/rent_gpu``, ``/jobs``, ``/cancel`` and ``/provider``: renting GPU time and offering it.

The rent flow is an explicit conversation ("rent") with named steps, each answered by a button or, for the
two inputs a button cannot carry, a typed URL or a document:

    class -> workload -> [epochs -> dataset | script | code -> packages -> inputs -> gpus -> [network]] -> limit
          -> confirm -> submitting

(``network`` is asked only when the class's offer allows egress: a job has no network unless it asks.)

The steps are the table ``RENT`` (``depu.bot.flows``). Callback data is ``rg:1:<action>:<value>``; the
flow's state lives on the profile, so a button from an abandoned or finished flow is answered, never
misread. Submitting moves the flow to ``submitting`` first (a conditional write) and submits in ``then``,
so a double-tapped Submit starts one job. Job buttons (``rj``) and provider buttons (``pv``) are flows
without steps: each entry is ``ANY``.
"""
from __future__ import annotations

import html
import logging
import time

from depu import conversation, credits
from depu.agents import bootstrap, catalogue, revocation, registry as agents
from depu.agents.tokens import ENROLMENT_TTL_SECONDS, issue_enrolment_token
from depu.bot import flows, job_text, private
from depu.bot.flows import ANY, DOCUMENT, TEXT, Flow, Next, Refuse, Turn, button
from depu.bot.registry import Button, Chat, Command, Feature, Incoming
from depu.bot.sections import Section
from depu.config import get_settings
from depu.errors import UserError
from depu.jobs import lifecycle, service, spec, uploads, workloads
from depu.jobs.metering import max_cost
from depu.jobs.models import Job
from depu.profiles import ensure_profile

log = logging.getLogger(__name__)

FLOW = "rent"
PREFIX = "rg"
JOB_PREFIX = job_text.CANCEL_PREFIX
PROVIDER_PREFIX = "pv"
EPOCH_CHOICES = (1, 3, 10)
WORKLOAD_LABELS = {
    "benchmark": "Benchmark (TFLOP/s, bandwidth)",
    "train": "Train a small model",
    "script": "Run my Python script",
    "job": "My own job: command or script, packages, GPUs",
}
GPU_COUNT_CHOICES = (1, 2, 4, 8)


def _button(label: str, *parts: object) -> Button:
    return Button(label, data=conversation.encode(PREFIX, *parts))


def _minutes(seconds: int) -> str:
    return f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds // 60} min"


def _profile(incoming: Incoming) -> None:
    ensure_profile(incoming.user_id, incoming.first_name, incoming.username, incoming.language_code)


# ---------------------------------------------------------------- /rent_gpu


def rent_gpu(incoming: Incoming, chat: Chat) -> None:
    """The flow's entry point: the class menu, at step ``class``."""
    _profile(incoming)
    offers = catalogue.offers()
    if not offers:
        conversation.clear(incoming.user_id, FLOW)
        chat.reply("No provider is online right now. Try again in a while, or offer your own machine with /provider.")
        return
    flows.begin(incoming.user_id, RENT, "class")
    rows = [
        [_button(f"{offer.label} · {offer.agents_online} online · {offer.price_per_hour} cr/h"
                 f" · {round(offer.reliability * 100)}% reliable · egress: {offer.egress}", "c", offer.gpu_class)]
        for offer in offers[:8]
    ]
    rows.append([_button("Cancel", "x")])
    # a rental ends with artifact links and logs: from a group the whole flow moves to the private chat
    private.send(incoming, chat, "<b>Rent a GPU</b>\nChoose a class (price per hour of GPU time, billed per second):", rows,
                 resume="rent")


def _workload_menu(turn: Turn) -> None:
    rows = [[_button(label, "w", name)] for name, label in WORKLOAD_LABELS.items()]
    rows.append([_button("Cancel", "x")])
    turn.show(f"<b>{html.escape(catalogue.describe(turn.data['gpu_class']))}</b>\nWhat should it run?", rows)


def _price(data: dict) -> int:
    """The hourly price of the job: a job spec pays for each of its GPUs."""
    return catalogue.price_per_hour(data["gpu_class"]) * int(data.get("gpu_count") or 1)


def _limit_menu(turn: Turn, note: str = "") -> None:
    price = _price(turn.data)
    rows = [
        [_button(f"{_minutes(seconds)} · at most {max_cost(price, seconds)} credits", "t", seconds)]
        for seconds in workloads.TIME_LIMIT_CHOICES
    ]
    rows.append([_button("Cancel", "x")])
    turn.show((note + "\n\n" if note else "") + "Time limit? The job stops when it is reached.", rows)


def _summary(data: dict) -> str:
    gpu_class, workload, limit = data["gpu_class"], data["workload"], int(data["time_limit_s"])
    price = _price(data)
    details = ""
    if workload == "train":
        details = f" · {int(data['epochs'])} epochs on {html.escape(data['dataset'])}"
    elif workload == "script":
        details = f" · <code>{html.escape(data['file_name'])}</code>"
    elif workload == spec.WORKLOAD:
        code = data.get("command") or data.get("file_name") or ""
        packages = len(spec.requirement_lines(data.get("requirements") or ""))
        details = (f" · <code>{html.escape(code[:80])}</code> · {packages} package(s) · "
                   f"{int(data.get('gpu_count') or 1)} GPU(s) · "
                   + ("egress (public addresses only)" if data.get("network") == spec.NETWORK_EGRESS else "no network"))
    return (
        f"<b>{html.escape(catalogue.describe(gpu_class))}</b> · {workload}{details}\n"
        f"Time limit {_minutes(limit)} at {price} credits/h.\n"
        f"It costs at most <b>{max_cost(price, limit)}</b> credits; you pay only for the seconds it runs."
    )


def _confirm(turn: Turn) -> None:
    balance = credits.balance(turn.user_id)
    rows = [[_button("Submit", "ok"), _button("Cancel", "x")]]
    turn.show(_summary(turn.data) + f"\nYou have {balance.credits} credits available.", rows)


def _params(data: dict) -> dict:
    if data["workload"] == "train":
        return {"epochs": data["epochs"], "dataset": data["dataset"]}
    if data["workload"] == "script":
        return {"file_name": data["file_name"], "file_size": data["file_size"]}
    if data["workload"] == spec.WORKLOAD:
        fields = {"requirements": data.get("requirements") or "", "gpu_count": int(data.get("gpu_count") or 1)}
        if data.get("network") == spec.NETWORK_EGRESS:
            fields["network"] = spec.NETWORK_EGRESS
        if data.get("command"):
            fields["command"] = data["command"]
        else:
            fields.update(file_name=data["file_name"], file_size=data["file_size"])
        return fields
    return {}


def _submit(turn: Turn) -> None:
    """Runs once the flow is at ``submitting`` (the write a second tap loses)."""
    incoming, chat, data = turn.incoming, turn.chat, turn.data
    script = None
    if data["workload"] == "script" or (data["workload"] == spec.WORKLOAD and data.get("file_id")):
        from depu.telegram.client import bot_api

        script = bot_api().download_file(data["file_id"], max_bytes=workloads.MAX_SCRIPT_BYTES)
    inputs, uploaded = None, None
    if data["workload"] == spec.WORKLOAD and data.get("inputs"):
        try:  # the large files first: nothing is downloaded or held while one of them is missing
            uploaded = uploads.confirm(incoming.user_id, data.get("draft") or "",
                                       [item["name"] for item in data["inputs"] if item.get("upload")])
        except UserError as error:
            turn.advance("limit")
            turn.answer()
            _limit_menu(turn, note=error.message)
            return
        from depu.telegram.client import bot_api

        inputs = [(item["name"], bot_api().download_file(item["file_id"], max_bytes=spec.MAX_INPUT_FILE_BYTES))
                  for item in data["inputs"] if not item.get("upload")]
    try:
        job = service.submit(
            incoming.user_id,
            incoming.user_id if private.in_group(incoming) else incoming.chat_id,  # results: private chat only
            gpu_class=data["gpu_class"],
            workload=data["workload"],
            params=_params(data),
            time_limit_s=int(data["time_limit_s"]),
            script=script,
            inputs=inputs,
            uploaded=uploaded,
        )
    except UserError as error:
        turn.advance("limit")
        turn.answer()
        _limit_menu(turn, note=error.message)
        return
    turn.finish()
    turn.answer("Submitted")
    turn.show(_summary(data) + "\n\nSubmitted. Follow it below, or with /jobs.")
    message_id = private.send(incoming, chat, job_text.status_text(job), [[job_text.cancel_button(job.job_id)]],
                              resume="jobs")
    if message_id is not None:
        service.set_progress_message(job.job_id, message_id)


def cancel_rent(turn: Turn) -> Next:
    return flows.end(then=lambda turn: turn.show("Cancelled. Nothing was charged."))


def choose_class(turn: Turn) -> Next:
    gpu_class = turn.arg(0)
    if gpu_class not in {offer.gpu_class for offer in catalogue.offers()}:
        raise Refuse("That class is not online any more. Send /rent_gpu again.", alert=True)
    return flows.go("workload", {"gpu_class": gpu_class}, then=_workload_menu)


def _epochs_menu(turn: Turn) -> None:
    turn.show("How many epochs?", [[_button(f"{n} epoch{'s' if n > 1 else ''}", "e", n) for n in EPOCH_CHOICES]])


def _script_prompt(turn: Turn) -> None:
    turn.show(f"Send your <b>.py</b> file as a document (at most {workloads.MAX_SCRIPT_BYTES // 1024} KiB). "
              "Files it writes to <code>outputs/</code> come back to you.")


def _code_prompt(turn: Turn) -> None:
    turn.show("Type the command to run (for example <code>python train.py --epochs 3</code>), or send a "
              f"<b>.py</b> file (at most {workloads.MAX_SCRIPT_BYTES // 1024} KiB). It has no network unless you "
              "ask for egress later (where a provider allows it); files it writes to <code>outputs/</code> come "
              "back to you.")


_AFTER_WORKLOAD = {"benchmark": ("limit", _limit_menu), "train": ("epochs", _epochs_menu), "script": ("script", _script_prompt),
                   spec.WORKLOAD: ("code", _code_prompt)}


def choose_workload(turn: Turn) -> Next:
    workload = turn.arg(0)
    if workload not in workloads.WORKLOADS or workload not in _AFTER_WORKLOAD:
        raise flows.StaleButton()
    step, screen = _AFTER_WORKLOAD[workload]
    return flows.go(step, {"workload": workload}, then=screen)


def choose_epochs(turn: Turn) -> Next:
    epochs = turn.int_arg(0, allowed=EPOCH_CHOICES)
    return flows.go("dataset", {"epochs": epochs}, then=lambda turn: turn.show(
        "Which dataset? Tap <b>Synthetic</b> or send an https:// URL of a CSV file.", [[_button("Synthetic", "d", "synthetic")]]))


def synthetic_dataset(turn: Turn) -> Next:
    if turn.arg(0) != "synthetic":
        raise flows.StaleButton()
    return flows.go("limit", {"dataset": "synthetic"}, then=_limit_menu)


def dataset_url(turn: Turn) -> Next:
    url = workloads.validate_dataset(turn.incoming.text.strip())  # a UserError keeps the question open
    return flows.go("limit", {"dataset": url}, then=_limit_menu)


def script_file(turn: Turn) -> Next:
    doc = turn.incoming.document
    assert doc is not None  # the dispatcher routes documents only
    workloads.validate_script_file(doc.file_name, doc.file_size)
    return flows.go("limit", {"file_id": doc.file_id, "file_name": doc.file_name[:100], "file_size": int(doc.file_size or 0)},
                    then=lambda turn: _limit_menu(turn, note=f"Got <code>{html.escape(doc.file_name)}</code>."))


def _packages_prompt(turn: Turn, note: str = "") -> None:
    turn.show((note + "\n\n" if note else "") + "Packages? Send your <b>requirements.txt</b> as a document "
              "(installed before your code starts, not billed), or tap <b>No packages</b>.",
              [[_button("No packages", "np")], [_button("Cancel", "x")]])


def _gpus_menu(turn: Turn, note: str = "") -> None:
    turn.show((note + "\n\n" if note else "") + "How many GPUs of one machine?",
              [[_button(str(n), "g", n) for n in GPU_COUNT_CHOICES], [_button("Cancel", "x")]])


def job_command(turn: Turn) -> Next:
    command = turn.incoming.text.strip()
    spec.JobSpec.parse({"command": command})  # a UserError keeps the question open
    return flows.go("packages", {"command": command}, then=_packages_prompt)


def job_script(turn: Turn) -> Next:
    doc = turn.incoming.document
    assert doc is not None
    workloads.validate_script_file(doc.file_name, doc.file_size)
    return flows.go("packages", {"file_id": doc.file_id, "file_name": doc.file_name[:100],
                                 "file_size": int(doc.file_size or 0)},
                    then=lambda turn: _packages_prompt(turn, note=f"Got <code>{html.escape(doc.file_name)}</code>."))


def requirements_file(turn: Turn) -> Next:
    doc = turn.incoming.document
    assert doc is not None
    if not (doc.file_name or "").lower().endswith(".txt") or not 0 < int(doc.file_size or 0) <= spec.MAX_REQUIREMENTS_BYTES:
        raise UserError(f"Send a <b>requirements.txt</b> of at most {spec.MAX_REQUIREMENTS_BYTES // 1024} KiB.")
    from depu.telegram.client import bot_api

    raw = bot_api().download_file(doc.file_id, max_bytes=spec.MAX_REQUIREMENTS_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError("requirements.txt must be UTF-8 text.") from error
    lines = spec.requirement_lines(text)  # a UserError names the line to fix
    return flows.go("inputs", {"requirements": "\n".join(lines)},
                    then=lambda turn: _inputs_prompt(turn, note=f"Got {len(lines)} package(s)."))


def no_packages(turn: Turn) -> Next:
    return flows.go("inputs", {"requirements": ""}, then=_inputs_prompt)


def _inputs_prompt(turn: Turn, note: str = "") -> None:
    count = len(turn.data.get("inputs") or [])
    turn.show((note + "\n\n" if note else "") + f"Input files? Send each as a document ({spec.MAX_INPUT_FILES} "
              f"files at most; over {spec.MAX_INPUT_FILE_BYTES // (1024 * 1024)} MB you get an upload link, up to "
              f"{uploads.describe_cap()}): your code finds them in <code>inputs/</code>."
              + (f" {count} so far." if count else ""),
              [[_button("Done" if count else "No input files", "nd")], [_button("Cancel", "x")]])


def input_file(turn: Turn) -> Next:
    doc = turn.incoming.document
    assert doc is not None
    held = list(turn.data.get("inputs") or [])
    if len(held) >= spec.MAX_INPUT_FILES:
        raise UserError(f"A job takes at most {spec.MAX_INPUT_FILES} input files: tap Done.")
    if int(doc.file_size or 0) > spec.MAX_INPUT_FILE_BYTES:  # a bot cannot download it: it comes by upload link
        return _upload_link_step(turn, doc.file_name or "input", int(doc.file_size))
    if not 0 < int(doc.file_size or 0):
        raise UserError("That file is empty.")
    if any(item["name"] == (doc.file_name or "input")[:100] for item in held):
        raise UserError("You already sent a file of that name.")
    held.append({"file_id": doc.file_id, "name": (doc.file_name or "input")[:100], "size": int(doc.file_size)})
    return flows.go("inputs", {"inputs": held},
                    then=lambda turn: _inputs_prompt(turn, note=f"Got <code>{html.escape(held[-1]['name'])}</code>."))


def _add_upload(data: dict, user_id: int, file_name: str, size: int | None) -> tuple[dict, uploads.UploadLink]:
    """The draft's data with one more file to come by upload link, and that link (``UserError`` if it does not
    fit: too many files, a name already taken, over the cap)."""
    held = list(data.get("inputs") or [])
    if len(held) >= spec.MAX_INPUT_FILES:
        raise UserError(f"A job takes at most {spec.MAX_INPUT_FILES} input files.")
    draft = data.get("draft") or uploads.new_draft_id()
    link = uploads.create_link(user_id, draft, file_name, size)
    if any(item["name"] == link.name for item in held):
        raise UserError(f"The job already has an input file named <code>{html.escape(link.name)}</code>.")
    held.append({"name": link.name, "upload": True, "size": int(size or 0)})
    return {"inputs": held, "draft": draft}, link


def upload_link_text(link: uploads.UploadLink) -> str:
    command = link.curl()
    how = (f"<pre>{html.escape(command)}</pre>" if len(command) < 3200
           else "Open the Mini App (/webapp) and choose the file under <b>Upload an input file</b>.")
    return (f"<code>{html.escape(link.name)}</code> is over Telegram's {spec.MAX_INPUT_FILE_BYTES // (1024 * 1024)} MB: "
            f"upload it yourself within {link.expires_in // 60} min (at most {uploads.describe_cap()}), from the "
            f"folder that holds it:\n{how}\nThe job starts only once the file is there; then tap Done.")


def _upload_link_step(turn: Turn, file_name: str, size: int) -> Next:
    data, link = _add_upload(turn.data, turn.user_id, file_name, size)
    return flows.go("inputs", data, then=lambda turn: _inputs_prompt(turn, note=upload_link_text(link)))


class NoDraft(UserError):
    """An upload link asked for outside the rent flow's input step."""


def request_upload(user_id: int, file_name: str, size: int | None) -> uploads.UploadLink:
    """An upload link for the user's job draft (the Mini App's file input): the rent flow must be at its input
    files step; the file joins the draft, as a document sent in the chat does."""
    current = conversation.load(user_id)
    if current is None or current.flow != FLOW or current.step != "inputs":
        raise NoDraft("Start a job with /rent_gpu → My own job and reach the input files step, then upload here.")
    data, link = _add_upload(current.data, user_id, file_name, size)
    conversation.advance(user_id, "inputs", data, flow=FLOW, current=current)
    return link


def inputs_done(turn: Turn) -> Next:
    return flows.go("gpus", then=_gpus_menu)


def choose_gpus(turn: Turn) -> Next:
    count = turn.int_arg(0, allowed=GPU_COUNT_CHOICES)
    if catalogue.egress_offered(turn.data["gpu_class"]):
        return flows.go("network", {"gpu_count": count}, then=_network_menu)
    return flows.go("limit", {"gpu_count": count}, then=_limit_menu)


def _network_menu(turn: Turn) -> None:
    turn.show("Network? By default your job has none. <b>Egress</b> lets it reach public addresses (ports 80 "
              "and 443, through the provider's filtering proxy: <code>pip</code>, <code>curl</code> and "
              "<code>requests</code> use it) on a provider that allows it; never the provider's own machine or "
              "network.", [[_button("No network", "n", spec.NETWORK_NONE), _button("Egress", "n", spec.NETWORK_EGRESS)],
                           [_button("Cancel", "x")]])


def choose_network(turn: Turn) -> Next:
    network = turn.arg(0)
    if network not in spec.NETWORKS:
        raise flows.StaleButton()
    return flows.go("limit", {"network": network}, then=_limit_menu)


def choose_limit(turn: Turn) -> Next:
    seconds = turn.int_arg(0, allowed=tuple(workloads.TIME_LIMIT_CHOICES))
    return flows.go("confirm", {"time_limit_s": seconds}, then=_confirm)


def submit(turn: Turn) -> Next:
    return flows.go("submitting", then=_submit)


RENT = Flow(
    name=FLOW, prefix=PREFIX, restart="/rent_gpu",
    steps={
        (ANY, button("x")): cancel_rent,
        ("class", button("c")): choose_class,
        ("workload", button("w")): choose_workload,
        ("epochs", button("e")): choose_epochs,
        ("dataset", button("d")): synthetic_dataset,
        ("dataset", TEXT): dataset_url,
        ("script", DOCUMENT): script_file,
        ("code", TEXT): job_command,
        ("code", DOCUMENT): job_script,
        ("packages", DOCUMENT): requirements_file,
        ("packages", button("np")): no_packages,
        ("inputs", DOCUMENT): input_file,
        ("inputs", button("nd")): inputs_done,
        ("gpus", button("g")): choose_gpus,
        ("network", button("n")): choose_network,
        ("limit", button("t")): choose_limit,
        ("confirm", button("ok")): submit,
    },
)


# ---------------------------------------------------------------- /jobs and /cancel


def _job_line(job: Job) -> str:
    cost = f"{int(job.charged)} cr" if job.charged is not None else f"≤{int(job.max_cost)} cr"
    return (
        f"<code>{job.job_id}</code> · {html.escape(catalogue.describe(job.gpu_class))} · {job.workload} · "
        f"<b>{job.status}</b> · {cost}"
    )


def list_jobs(incoming: Incoming, chat: Chat) -> None:
    wanted = incoming.args.split()[0] if incoming.command == "jobs" and incoming.args.split() else ""
    if wanted:
        job = service.user_job(incoming.user_id, wanted)
        if job is None:
            raise UserError("No such job of yours. /jobs lists them.")
        body = job_text.summary_text(job) if job.status in lifecycle.TERMINAL else job_text.status_text(job)
        active = [[job_text.cancel_button(job.job_id)]]
        # artifact links (presigned, 24 h) and log lines are the renter's alone: never into a group
        private.send(incoming, chat, body, active if job.status in lifecycle.ACTIVE else None, resume=f"jobs_{job.job_id}")
        return
    jobs = service.user_jobs(incoming.user_id)
    if not jobs:
        chat.reply("You have no jobs yet. Start one with /rent_gpu.")
        return
    rows = [
        [Button(f"Cancel {job.job_id}", data=job_text.cancel_button(job.job_id).data)]
        for job in jobs
        if job.status in lifecycle.ACTIVE
    ][:5]
    private.send(incoming, chat, "<b>Your jobs</b> (newest first)\n" + "\n".join(_job_line(job) for job in jobs), rows or None,
                 resume="jobs")


def _cancel(incoming: Incoming, chat: Chat, job_id: str) -> None:
    job = service.cancel(incoming.user_id, job_id)
    chat.answer_callback("Cancelled")
    chat.reply(f"🛑 Job <code>{job.job_id}</code> cancelled; the provider stops it within seconds. "
               "You pay only for the seconds it ran.")


def cancel_job(incoming: Incoming, chat: Chat) -> None:
    job_id = incoming.args.split()[0] if incoming.args.split() else ""
    if not job_id:
        list_jobs(incoming, chat)
        return
    _cancel(incoming, chat, job_id)


def cancel_button_pressed(turn: Turn) -> None:
    """``rj:1:c:<job id>``: a refusal (not yours, already over) is a popup, not a new message."""
    try:
        _cancel(turn.incoming, turn.chat, turn.arg(0))
    except UserError as error:
        raise Refuse(html.unescape(_strip_tags(error.message)), alert=True) from None


JOBS = Flow(name="jobs", prefix=JOB_PREFIX, restart="/jobs", steps={(ANY, button("c")): cancel_button_pressed})


def _strip_tags(value: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", value)


# ---------------------------------------------------------------- /provider


SUDO_WITH_TOKEN = bootstrap.SUDO_WITH_TOKEN


def install_command(token: str) -> str:
    """What a provider pastes on the GPU machine: it verifies install.sh against the operator's key pinned in
    the line itself before running it as root, and install.sh verifies the agent package it fetches from the
    API with the same key, so no checkout is needed there (depu.agents.bootstrap, agent/README.md). The token
    travels in the environment, never as an argument that other users of the machine could see in ``ps``.
    Raises bootstrap.NotConfigured when this deployment has no signing key or no https URL."""
    settings = get_settings()
    return bootstrap.install_command(settings.public_api_url, settings.agent_signing_public_key, token)


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _agent_line(agent, now: float, earnings: service.AgentEarnings) -> str:
    online = agents.is_online(agent, now)
    gpus = agent.gpus or []
    hardware = f"{len(gpus)}× {html.escape(gpus[0]['name'])}" if gpus else "CPU only"
    state = f"🟢 online, up {_ago(now - float(agent.registered_at))}" if online else (
        f"⚪ offline, last seen {_ago(now - float(agent.last_seen_at))} ago")
    if agent.revoked_at is not None:
        state = f"⛔ revoked {_ago(now - float(agent.revoked_at))} ago"
    verified = "verified" if agent.verified else f"unverified ({html.escape(agent.verdict or '')})"
    done, earned = earnings.jobs_done, earnings.earned
    line = (f"• <b>{html.escape(agent.name)}</b> — {hardware} · {verified}\n"
            f"  {state} · busy {int(agent.busy or 0)}/{int(agent.gpu_count)} · {done} jobs · {earned} credits earned")
    line += (f"\n  reliability {round(agent.reliability * 100)}% · challenges {int(agent.challenges_passed or 0)} passed, "
             f"{int(agent.challenges_failed or 0)} failed · {int(agent.leases_lost or 0)} leases lost")
    if agent.fault:
        line += f"\n  ⚠️ takes no jobs: {html.escape(agent.fault)}"
    return line


def provider(incoming: Incoming, chat: Chat) -> None:
    _profile(incoming)
    now = time.time()
    mine = sorted(agents.agents_of_provider(incoming.user_id), key=lambda agent: -float(agent.last_seen_at))
    try:
        command_line = install_command(issue_enrolment_token(incoming.user_id))
    except bootstrap.NotConfigured:  # never show a command that would run an unverified script as root
        log.warning("/provider has no install command: agent signing key or https API URL missing")
        offer = ["<b>Offer your machine</b>", "Adding machines is not available right now; try again later."]
    else:
        offer = [
            "<b>Offer your machine</b>",
            f"Run this on one Linux machine with an NVIDIA GPU (valid {ENROLMENT_TTL_SECONDS // 3600} h, "
            "for one machine only: send /provider again for the next; keep it secret):",
            f"<pre>{html.escape(command_line)}</pre>",
        ]
    lines = [*offer, "You earn what renters pay for each second your GPU runs their jobs."]
    shown = mine[:10]
    if shown:
        lines.append("\n<b>Your machines</b>")
        earnings = service.earnings_by_agent(incoming.user_id)
        lines.extend(_agent_line(agent, now, earnings.get(agent.agent_id, service.AgentEarnings())) for agent in shown)
        lines.append("Revoke a machine you no longer control (sold, lost, or its token leaked): it is cut off at once.")
    lines.append(f"\nTotal earned: <b>{credits.balance(incoming.user_id).earned}</b> credits.")
    from depu.bot import money, money_buttons  # withdrawals: the payouts with their transactions, Withdraw

    lines.extend(money.provider_lines(incoming.user_id))
    buttons = [[PROVIDER.button(f"Revoke {agent.name}"[:60], "rv", agent.agent_id)]
               for agent in shown if agent.revoked_at is None]
    buttons.append([money_buttons.withdraw_button()])
    # the install token enrols a machine as this provider: from a group it goes to the private chat only
    private.send(incoming, chat, "\n".join(lines), buttons or None, resume="provider")


def keep_machine(turn: Turn) -> None:
    turn.answer("Kept")


def _own_agent(turn: Turn):  # noqa: ANN202 - an Agent item
    agent = agents.get_agent(turn.arg(0))
    if agent is None or int(agent.provider_id) != turn.user_id:
        raise Refuse("That machine is not one of yours. Send /provider again.", alert=True)
    return agent


def ask_revoke(turn: Turn) -> None:
    """Revoking one of this provider's machines asks first."""
    agent = _own_agent(turn)
    turn.answer()
    turn.reply(f"Revoke <b>{html.escape(agent.name)}</b>? Its agent stops at once and the jobs it runs go to another "
               "provider. To offer the machine again, install it with a new token from /provider.",
               [[PROVIDER.button("Yes, revoke", "rvok", agent.agent_id), PROVIDER.button("Keep it", "keep", agent.agent_id)]])


def revoke(turn: Turn) -> None:
    """One conditional write: only the owner's machine, only once (depu.agents.revocation)."""
    agent = _own_agent(turn)
    outcome = revocation.revoke(agent.agent_id, by=f"provider:{turn.user_id}", provider_id=turn.user_id)
    if outcome.outcome == revocation.ALREADY_REVOKED:
        raise Refuse("Already revoked.")
    turn.answer("Revoked")
    moved = f" {len(outcome.requeued)} of its jobs went back to the queue." if outcome.requeued else ""
    turn.reply(f"⛔ <b>{html.escape(agent.name)}</b> is revoked: its token no longer works.{moved}")


PROVIDER = Flow(name="provider", prefix=PROVIDER_PREFIX, restart="/provider", steps={
    (ANY, button("rv")): ask_revoke,
    (ANY, button("rvok")): revoke,
    (ANY, button("keep")): keep_machine,
})


# ---------------------------------------------------------------- /profile section


def rentals_section(user_id: int) -> str:
    jobs = service.user_jobs(user_id, limit=50)
    mine = agents.agents_of_provider(user_id)
    if not jobs and not mine:
        return "No rentals yet. Try /rent_gpu, or offer your GPU with /provider."
    active = sum(1 for job in jobs if job.status in lifecycle.ACTIVE)
    spent = sum(int(job.charged or 0) for job in jobs)
    parts = [f"{len(jobs)} recent jobs, {active} active, {spent} credits spent."]
    if mine:
        online = sum(1 for agent in mine if agents.is_online(agent))
        parts.append(f"Provider: {len(mine)} machines ({online} online), {credits.balance(user_id).earned} credits earned.")
    return " ".join(parts)


FEATURE = Feature(
    "rental",
    commands=(
        Command("rent_gpu", "Rent GPU time from a provider", rent_gpu),
        Command("jobs", "Your GPU jobs; /jobs <job id> for one job's result, logs and files", list_jobs),
        Command("cancel", "Cancel one of your jobs: /cancel <job id>", cancel_job),
        Command("provider", "Offer your GPU machine and see your earnings", provider),
    ),
    flows=(RENT, JOBS, PROVIDER),
    sections=(Section(20, "GPU rentals", rentals_section),),
)
