"""The ``depu`` command: DePU's jobs, shadow forks and analytics from a terminal or CI.

Output is a table (or one bare value where a pipeline wants one: ``depu forks create`` prints only the RPC
URL, so ``forge test --fork-url "$(depu forks create)"`` works); ``--json`` prints the API's JSON instead.
Progress and status lines go to stderr, so stdout stays clean for pipes. Exit status: 0 done, 1 the thing
failed (a job that failed, an export with no rows), 2 the API refused the request.
"""
from __future__ import annotations

import base64
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import click

from depu_cli import __version__
from depu_cli.client import ApiError, Client, load_config, save_config
from depu_cli.tables import table

FINISHED_JOB_OK = "succeeded"
POLL_S = 2.0


# ------------------------------------------------------------------------------------------- plumbing
def _client(ctx: click.Context) -> Client:
    options = ctx.find_root().params
    client = Client.from_config(options.get("api_url"), None)
    if not client.key:
        raise click.ClickException("not logged in: run `depu login` (or set DEPU_API_KEY)")
    return client


def _emit(ctx: click.Context, data: Any, human: Callable[[Any], str]) -> None:
    if ctx.find_root().params.get("json_output") or ctx.params.get("json_output"):
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(human(data))


def _status(message: str) -> None:
    click.echo(message, err=True)


json_option = click.option("--json", "json_output", is_flag=True, help="Print the API's JSON instead of a table.")


class DepuGroup(click.Group):
    """Turns API refusals into one clear line and exit status 2, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(2)


@click.group(cls=DepuGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--api-url", envvar="DEPU_API_URL", help="The API's base URL (default: the one you logged in to).")
@click.option("--json", "json_output", is_flag=True, help="Print JSON instead of tables (every command).")
@click.version_option(__version__, prog_name="depu")
def main(api_url: Optional[str], json_output: bool) -> None:
    """DePU from code: rent GPUs, run shadow forks of Ethereum mainnet, export chain data.

    Start with `depu login` (an API key from the chat: /profile → API keys). In CI, set DEPU_API_KEY
    instead. Every command has --help.
    """


# ------------------------------------------------------------------------------------------- account
@main.command()
@click.option("--key", help="The API key (asked for, hidden, if not given).")
@click.pass_context
def login(ctx: click.Context, key: Optional[str]) -> None:
    """Check an API key and store it in your config folder (readable by you only)."""
    if not key:
        key = click.prompt("API key (dpk_...)", hide_input=True).strip()
    url = ctx.find_root().params.get("api_url") or load_config().get("api_url") or Client.from_config().api_url
    profile = Client(url, key).get("/v1/profile")
    path = save_config(url, key)
    _status(f"Logged in as {profile.get('first_name') or profile['user_id']} (key {profile['key_id']}, "
            f"scopes {', '.join(profile['scopes'])}); saved to {path}")


@main.command()
@json_option
@click.pass_context
def whoami(ctx: click.Context, json_output: bool) -> None:
    """Who the key belongs to, its scopes, and your credits."""
    data = _client(ctx).get("/v1/profile")
    _emit(ctx, data, lambda p: table([{
        "user": p["user_id"], "name": p.get("first_name") or "", "key": p["key_id"], "scopes": ",".join(p["scopes"]),
        "credits": p["credits"]["available"], "held": p["credits"]["held"]}]))


@main.command()
@click.option("--limit", default=20, show_default=True, help="How many ledger entries.")
@json_option
@click.pass_context
def credits(ctx: click.Context, limit: int, json_output: bool) -> None:
    """Your credit balance and recent ledger entries (1 credit = 0.001 USD)."""
    data = _client(ctx).get("/v1/credits/ledger", limit=limit)
    _emit(ctx, data, lambda d: f"available {d['credits']['available']}, held {d['credits']['held']}, "
                               f"earned {d['credits']['earned']}\n" + table(
        [{k: e[k] for k in ("created_at", "kind", "amount", "released", "job_id")} for e in d["entries"]]))


# ------------------------------------------------------------------------------------------- jobs
@main.group()
def jobs() -> None:
    """GPU jobs: run a script, follow its logs, list, cancel, fetch artifacts."""


JOB_COLUMNS = ("job_id", "status", "gpu_class", "workload", "progress", "charged", "created_at")


def _job_row(job: dict[str, Any]) -> dict[str, Any]:
    row = {k: job.get(k) for k in JOB_COLUMNS}
    row["progress"] = f"{float(job.get('progress') or 0):.0%}" if job.get("progress") is not None else ""
    return row


class _UploadProgress(io.BytesIO):
    """A request body that moves a progress bar as the HTTP layer reads it."""

    def __init__(self, data: bytes, bar: Any):
        super().__init__(data)
        self.bar = bar

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        self.bar.update(len(chunk))
        return chunk


@jobs.command("run")
@click.option("--gpu", "gpu_class", required=True, help="GPU class, e.g. a100-80gb, rtx4090-24gb, or cpu.")
@click.option("--image", help="'default' (the provider's CUDA and PyTorch image) or registry/path@sha256:<digest>.")
@click.option("--requirements", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A requirements.txt installed before the script starts (package names and versions only).")
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE",
              help="A non-secret environment variable for the script; repeat for more.")
@click.option("--gpus", "gpu_count", type=int, help="GPUs of one machine for the job (default 1).")
@click.option("--egress", is_flag=True, default=False,
              help="Let the job reach public addresses (ports 80, 443) through the provider's filtering proxy; "
                   "only providers whose offer says 'egress: allowed' take it. Default: no network.")
@click.option("--egress-host", "egress_hosts", multiple=True, metavar="NAME",
              help="With egress, the only hosts the job may reach (a DNS name or *.name); repeat for more. "
                   "Implies --egress.")
@click.option("--input", "input_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file the script finds in inputs/ (up to the API's cap, 2 GiB by default); repeat for more.")
@click.option("--time-limit", default=900, show_default=True, help="Seconds; the job is stopped at this limit.")
@click.option("--follow/--no-follow", default=False, help="Stream the logs until the job ends.")
@click.argument("script", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def jobs_run(ctx: click.Context, gpu_class: str, image: Optional[str], requirements: Optional[Path],
             env_pairs: tuple[str, ...], gpu_count: Optional[int], egress: bool, egress_hosts: tuple[str, ...],
             input_files: tuple[Path, ...],
             time_limit: int, follow: bool, script: Path, json_output: bool) -> None:
    """Upload SCRIPT (a .py file) and run it on a GPU of class --gpu.

    With --requirements, --env, --gpus, --egress, --egress-host, --image or --input it is a job spec (the chat's "My own job");
    the API says what it refuses (a URL in requirements.txt, a secret-looking variable name, another image).
    Each --input file is uploaded first through its own upload link, then the job is submitted naming them.
    The most the job can cost is held from your credits at submit; you pay per second of run time.
    Files the script writes to outputs/ come back as artifacts (`depu jobs artifacts ID`).
    """
    client = _client(ctx)
    source = script.read_bytes()
    spec: dict[str, Any] = {"gpu_class": gpu_class, "workload": "script", "time_limit_s": time_limit,
                            "script_b64": base64.b64encode(source).decode(), "file_name": script.name}
    job_fields = _job_fields(image, requirements, env_pairs, gpu_count)
    if egress or egress_hosts:
        job_fields["network"] = "egress"
    if egress_hosts:
        job_fields["egress_hosts"] = list(egress_hosts)
    if input_files:
        job_fields["inputs"] = _upload_inputs(client, input_files)
    if job_fields:
        spec.update(job_fields, workload="job")
    payload = json.dumps(spec).encode()
    with click.progressbar(length=len(payload), label=f"Uploading {script.name}", file=sys.stderr) as bar:
        job = client.request("POST", "/v1/jobs", data=lambda: _UploadProgress(payload, _Restart(bar)))
    _status(f"Job {job['job_id']} queued on {job['gpu_class']} (holds up to {job['max_cost']} credits)")
    if not follow:
        _emit(ctx, job, lambda j: table([_job_row(j)]))
        return
    final = _follow_logs(client, job["job_id"])
    _emit(ctx, final, lambda j: table([_job_row(j)]))
    if final["status"] != FINISHED_JOB_OK:
        if final.get("error"):
            _status(f"Job {final['job_id']} {final['status']}: {final['error']}")
        ctx.exit(1)


def _job_fields(image: Optional[str], requirements: Optional[Path], env_pairs: tuple[str, ...],
                gpu_count: Optional[int]) -> dict[str, Any]:
    """The job spec's fields as given; only NAME=VALUE's shape is checked here, the API judges the rest."""
    fields: dict[str, Any] = {}
    if image is not None:
        fields["image"] = image
    if requirements is not None:
        fields["requirements"] = requirements.read_text()
    if env_pairs:
        env: dict[str, str] = {}
        for pair in env_pairs:
            name, sep, value = pair.partition("=")
            if not sep or not name:
                raise click.BadParameter(f"{pair!r} is not NAME=VALUE.", param_hint="--env")
            env[name] = value
        fields["env"] = env
    if gpu_count is not None:
        fields["gpu_count"] = gpu_count
    return fields


def _upload_inputs(client: Client, paths: tuple[Path, ...]) -> list[str]:
    """Each file through its own upload link (streamed from disk, a progress bar on stderr); their upload ids."""
    names = [path.name for path in paths]
    if len(set(names)) != len(names):
        raise click.BadParameter("two --input files have the same name (the job sees them by name in inputs/).",
                                 param_hint="--input")
    upload_ids = []
    for path in paths:
        size = path.stat().st_size
        if size == 0:
            raise click.BadParameter(f"{path} is empty.", param_hint="--input")
        made = client.post("/v1/uploads", {"file_name": path.name, "size": size})
        with click.progressbar(length=size, label=f"Uploading {path.name}", file=sys.stderr) as bar:
            client.upload(made["url"], made["fields"], path, bar.update)
        upload_ids.append(made["upload_id"])
    return upload_ids


class _Restart:
    """Each retry re-reads the body from the start: the bar shows the attempt in flight."""

    def __init__(self, bar: Any):
        self.bar = bar
        bar.pos = 0

    def update(self, count: int) -> None:
        self.bar.update(count)


def _follow_logs(client: Client, job_id: str) -> dict[str, Any]:
    """Print the job's log lines as they arrive (stdout) until it ends; returns the final job."""
    cursor = -1
    while True:
        page = client.get(f"/v1/jobs/{job_id}/logs", cursor=cursor, follow="true")
        for line in page["lines"]:
            click.echo(line)
        cursor = page["cursor"]
        if page["finished"]:
            return client.get(f"/v1/jobs/{job_id}")
        if not page["lines"] and not page["more"]:
            continue  # the server already waited (long poll)


@jobs.command("list")
@click.option("--limit", default=20, show_default=True)
@json_option
@click.pass_context
def jobs_list(ctx: click.Context, limit: int, json_output: bool) -> None:
    """Your jobs, newest first."""
    data = _client(ctx).get("/v1/jobs", limit=limit)
    _emit(ctx, data, lambda d: table([_job_row(j) for j in d["jobs"]]))


@jobs.command("get")
@click.argument("job_id")
@json_option
@click.pass_context
def jobs_get(ctx: click.Context, job_id: str, json_output: bool) -> None:
    """One job: status, progress, result and cost."""
    job = _client(ctx).get(f"/v1/jobs/{job_id}")
    _emit(ctx, job, lambda j: table([_job_row(j)]) + (f"\nresult: {json.dumps(j['result'])}" if j.get("result") else "")
          + (f"\nerror: {j['error']}" if j.get("error") else ""))


@jobs.command("logs")
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
@click.pass_context
def jobs_logs(ctx: click.Context, job_id: str, follow: bool) -> None:
    """A job's full log (all of it, not just the chat's tail)."""
    client = _client(ctx)
    if follow:
        _follow_logs(client, job_id)
        return
    cursor = -1
    while True:
        page = client.get(f"/v1/jobs/{job_id}/logs", cursor=cursor)
        for line in page["lines"]:
            click.echo(line)
        cursor = page["cursor"]
        if not page["more"]:
            return


@jobs.command("cancel")
@click.argument("job_id")
@json_option
@click.pass_context
def jobs_cancel(ctx: click.Context, job_id: str, json_output: bool) -> None:
    """Cancel a job; its agent stops it within seconds and you pay only for the time it ran."""
    job = _client(ctx).post(f"/v1/jobs/{job_id}/cancel")
    _emit(ctx, job, lambda j: table([_job_row(j)]))


@jobs.command("artifacts")
@click.argument("job_id")
@click.option("--download", "-d", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Save the files into this folder.")
@json_option
@click.pass_context
def jobs_artifacts(ctx: click.Context, job_id: str, folder: Optional[Path], json_output: bool) -> None:
    """The files a job produced (download links, or --download DIR)."""
    client = _client(ctx)
    data = client.get(f"/v1/jobs/{job_id}/artifacts")
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
        for item in data["artifacts"]:
            if item["state"] == "ok" and item.get("url"):
                target = folder / Path(item["name"]).name
                client.download(item["url"], target)
                _status(f"saved {target}")
    _emit(ctx, data, lambda d: table([{k: a.get(k) for k in ("name", "state", "size", "url")} for a in d["artifacts"]]))


# ------------------------------------------------------------------------------------------- forks
@main.group()
def forks() -> None:
    """Shadow forks of Ethereum mainnet: create, sync, fund, impersonate, snapshot, delete."""


FORK_COLUMNS = ("fork_id", "status", "base_block", "chain_id", "auto_sync", "last_synced_at", "created_at")


def _fork_rows(items: list[dict[str, Any]]) -> str:
    return table([{k: f.get(k) for k in FORK_COLUMNS} for f in items])


def _wait_fork(client: Client, fork_id: str, done: Callable[[dict[str, Any]], bool], timeout: float,
               what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        detail = client.get(f"/v1/forks/{fork_id}")
        fork = detail["fork"]
        if fork["status"] in ("failed", "deleted", "deleting"):
            raise click.ClickException(f"fork {fork_id} is {fork['status']}" + (f": {fork['failure']}" if fork.get("failure") else ""))
        if done(fork):
            return detail
        if time.monotonic() > deadline:
            raise click.ClickException(f"fork {fork_id} is still {fork['status']} after {timeout:.0f} s ({what})")
        time.sleep(POLL_S)


@forks.command("create")
@click.option("--block", type=int, help="The mainnet block to fork at (default: the latest).")
@click.option("--keep-mainnet-chain-id", is_flag=True,
              help="Keep chain id 1 (anything you sign is also valid on mainnet; throwaway keys only).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the fork answers.")
@click.option("--timeout", default=300, show_default=True, help="Seconds to wait for the fork.")
@json_option
@click.pass_context
def forks_create(ctx: click.Context, block: Optional[int], keep_mainnet_chain_id: bool, wait: bool, timeout: int,
                 json_output: bool) -> None:
    """Create a shadow fork and print its RPC URL (shown once).

    The URL works as Foundry's --fork-url / --rpc-url, in Hardhat, web3.py and ethers:
    `new ethers.JsonRpcProvider(url)`.
    """
    client = _client(ctx)
    body: dict[str, Any] = {"keep_mainnet_chain_id": keep_mainnet_chain_id}
    if block is not None:
        body["block"] = block
    created = client.post("/v1/forks", body)
    fork_id = created["fork"]["fork_id"]
    _status(f"Fork {fork_id} requested at {created['fork']['block_requested']}")
    if wait:
        detail = _wait_fork(client, fork_id, lambda f: f["status"] == "active", timeout, "creating")
        created["fork"] = detail["fork"]
        _status(f"Fork {fork_id} is active at block {detail['fork'].get('base_block')}, chain id {detail['fork'].get('chain_id')}")
    _emit(ctx, created, lambda c: c["rpc_url"])


@forks.command("list")
@json_option
@click.pass_context
def forks_list(ctx: click.Context, json_output: bool) -> None:
    """Your forks, newest first."""
    data = _client(ctx).get("/v1/forks")
    _emit(ctx, data, lambda d: _fork_rows(d["forks"]))


@forks.command("get")
@click.argument("fork_id")
@json_option
@click.pass_context
def forks_get(ctx: click.Context, fork_id: str, json_output: bool) -> None:
    """One fork: status, base block, journal size, blocks behind mainnet."""
    data = _client(ctx).get(f"/v1/forks/{fork_id}")
    _emit(ctx, data, lambda d: _fork_rows([d["fork"]]) + f"\njournal {d['journal_size']} writes, "
                               f"{d.get('blocks_behind') if d.get('blocks_behind') is not None else '?'} blocks behind mainnet")


@forks.command("sync")
@click.argument("fork_id")
@click.option("--wait", is_flag=True, help="Wait until the rebase has finished.")
@click.option("--timeout", default=300, show_default=True)
@json_option
@click.pass_context
def forks_sync(ctx: click.Context, fork_id: str, wait: bool, timeout: int, json_output: bool) -> None:
    """Rebase the fork on mainnet's head now, keeping your own changes."""
    client = _client(ctx)
    before = client.get(f"/v1/forks/{fork_id}")["fork"]
    started = client.post(f"/v1/forks/{fork_id}/sync")
    _status(f"Sync {started['execution']} started")
    if not wait:
        _emit(ctx, started, lambda s: s["execution"])
        return
    mark = (before.get("last_synced_at"), before.get("last_sync_error"))
    detail = _wait_fork(client, fork_id, lambda f: f["status"] == "active" and
                        (f.get("last_synced_at"), f.get("last_sync_error")) != mark, timeout, "syncing")
    if detail["fork"].get("last_sync_error") and detail["fork"].get("last_sync_error") != mark[1]:
        _emit(ctx, detail, lambda d: _fork_rows([d["fork"]]))
        _status(f"sync failed: {detail['fork']['last_sync_error']}")
        ctx.exit(1)
    _emit(ctx, detail, lambda d: _fork_rows([d["fork"]]))


@forks.command("delete")
@click.argument("fork_id")
@json_option
@click.pass_context
def forks_delete(ctx: click.Context, fork_id: str, json_output: bool) -> None:
    """Delete a fork; its RPC URL stops answering at once."""
    data = _client(ctx).delete(f"/v1/forks/{fork_id}")
    _emit(ctx, data, lambda d: f"{d['id']} {d['status']}")


@forks.command("fund")
@click.argument("fork_id")
@click.argument("address")
@click.argument("eth")
@json_option
@click.pass_context
def forks_fund(ctx: click.Context, fork_id: str, address: str, eth: str, json_output: bool) -> None:
    """Add ETH to ADDRESS on the fork (gas-free)."""
    data = _client(ctx).post(f"/v1/forks/{fork_id}/fund", {"address": address, "eth": eth})
    _emit(ctx, data, lambda d: f"{d['address']} now holds {int(d['balance_wei']) / 10**18:g} ETH")


@forks.command("impersonate")
@click.argument("fork_id")
@click.argument("address")
@click.option("--stop", is_flag=True, help="Stop impersonating.")
@json_option
@click.pass_context
def forks_impersonate(ctx: click.Context, fork_id: str, address: str, stop: bool, json_output: bool) -> None:
    """Send transactions as ADDRESS without its key."""
    data = _client(ctx).post(f"/v1/forks/{fork_id}/impersonate", {"address": address, "stop": stop})
    _emit(ctx, data, lambda d: f"{'impersonating' if d['impersonating'] else 'stopped impersonating'} {d['address']}")


@forks.command("snapshot")
@click.argument("fork_id")
@json_option
@click.pass_context
def forks_snapshot(ctx: click.Context, fork_id: str, json_output: bool) -> None:
    """Snapshot the fork's state; prints the snapshot id for `depu forks revert`."""
    data = _client(ctx).post(f"/v1/forks/{fork_id}/snapshots")
    _emit(ctx, data, lambda d: d["snapshot_id"])


@forks.command("revert")
@click.argument("fork_id")
@click.argument("snapshot_id")
@json_option
@click.pass_context
def forks_revert(ctx: click.Context, fork_id: str, snapshot_id: str, json_output: bool) -> None:
    """Revert the fork to SNAPSHOT_ID."""
    data = _client(ctx).post(f"/v1/forks/{fork_id}/revert", {"snapshot_id": snapshot_id})
    _emit(ctx, data, lambda d: "reverted" if d["reverted"] else "not reverted (unknown snapshot?)")


@forks.command("rpc-url")
@click.argument("fork_id")
@json_option
@click.pass_context
def forks_rpc_url(ctx: click.Context, fork_id: str, json_output: bool) -> None:
    """A new RPC URL for the fork (the old one stops answering)."""
    data = _client(ctx).post(f"/v1/forks/{fork_id}/rpc-url")
    _emit(ctx, data, lambda d: d["rpc_url"])


# ------------------------------------------------------------------------------------------- analytics
@main.group()
def analytics() -> None:
    """Chain, token and address views (JSON with --json)."""


window_option = click.option("--window", type=click.Choice(["1h", "24h", "7d"]), default=None,
                             help="The time window (default 1h for the chain, 24h otherwise).")


@analytics.command("chain")
@window_option
@json_option
@click.pass_context
def analytics_chain(ctx: click.Context, window: Optional[str], json_output: bool) -> None:
    """Blocks, transactions, transfers and gas over a window."""
    data = _client(ctx).get("/v1/analytics/chain", window=window)
    _emit(ctx, data, lambda d: table([{k: d[k] for k in ("window", "head", "blocks", "transactions", "transfers",
                                                          "average_gas_used")}]))


@analytics.command("token")
@click.argument("address")
@window_option
@json_option
@click.pass_context
def analytics_token(ctx: click.Context, address: str, window: Optional[str], json_output: bool) -> None:
    """A token's volume, transfers, active addresses and top movers."""
    data = _client(ctx).get(f"/v1/analytics/tokens/{address}", window=window)
    _emit(ctx, data, lambda d: table([{"token": d["token"].get("symbol") or d["token"]["token"], "window": d["window"],
                                       "volume": d["volume"], "transfers": d["transfers"],
                                       "active": d["active_addresses"]}]) + "\n" + table(d["top_movers"]))


@analytics.command("address")
@click.argument("address")
@window_option
@json_option
@click.pass_context
def analytics_address(ctx: click.Context, address: str, window: Optional[str], json_output: bool) -> None:
    """An address's flows per asset and its busiest counterparties."""
    data = _client(ctx).get(f"/v1/analytics/addresses/{address}", window=window)
    _emit(ctx, data, lambda d: table([{k: f[k] for k in ("asset", "inflow", "outflow", "net", "transfers")}
                                      for f in d["flows"]]))


# ------------------------------------------------------------------------------------------- export
@main.command("export")
@click.argument("dataset", type=click.Choice(["transfers", "blocks"]))
@click.option("--token", help="Transfers of this token (contract address) only.")
@click.option("--from-block", type=int, required=True)
@click.option("--to-block", type=int, required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet"]), default="parquet", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Where to save the file "
              "(default: the server's file name in this folder).")
@click.option("--timeout", default=600, show_default=True, help="Seconds to wait for the file.")
@json_option
@click.pass_context
def export(ctx: click.Context, dataset: str, token: Optional[str], from_block: int, to_block: int, fmt: str,
           output: Optional[Path], timeout: int, json_output: bool) -> None:
    """Export DATASET over a block range (at most 10,000 blocks) and download it."""
    client = _client(ctx)
    body: dict[str, Any] = {"dataset": dataset, "from_block": from_block, "to_block": to_block, "format": fmt}
    if token:
        body["token"] = token
    started = client.post("/v1/exports", body)
    export_id = started["export_id"]
    deadline = time.monotonic() + timeout
    with click.progressbar(length=timeout, label=f"Building export {export_id}", file=sys.stderr,
                           show_percent=False, show_eta=False) as waiting:
        found = started
        while found["status"] == "pending":
            if time.monotonic() > deadline:
                raise click.ClickException(f"export {export_id} is still being built after {timeout} s")
            time.sleep(POLL_S)
            waiting.update(int(POLL_S))
            found = client.get(f"/v1/exports/{export_id}")
    if found["status"] == "empty":
        _emit(ctx, found, lambda f: f"no {dataset} in blocks {from_block}-{to_block} (not indexed yet?)")
        ctx.exit(1)
    target = output or Path(found["filename"])
    with click.progressbar(length=found.get("size") or 0, label=f"Downloading {target.name}", file=sys.stderr) as bar:
        size = client.download(found["download_url"], target, lambda n, _total: bar.update(n))
    found["saved_to"] = str(target)
    _emit(ctx, found, lambda f: f"{target} ({size:,} bytes)")
