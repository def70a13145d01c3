"""One claimed job, from start to its final report: runs the workload in a child pinned to its GPU, relays
logs and progress, enforces the time limit and stop requests, and leaves exactly one report in the outbox.

Outcomes and their reports:
  result event            -> complete (artifacts uploaded first)
  error event             -> fail, retryable as the workload said
  no event, bad exit      -> fail, retryable (the machine, not the job, is suspect)
  time limit reached      -> fail, not retryable
  shutdown                -> release (handed back, retried elsewhere)
  cancelled / lost        -> nothing: the cloud already decided
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import requests

from . import containers, egress, envcache, failures, hostlist, inputs, isolation
from .gpus import Gpu
from .logship import JobChannel
from .runner import EVENTS_FD, ChildProcess, Outcome, StopRequest

log = logging.getLogger(__name__)
AGENT_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
CHILD_WORKLOADS = ("benchmark", "train")
SPEC_WORKLOAD = "job"  # a job spec (depu.jobs.spec): setup (packages), then the user's command or script
ZIP_NAME = "outputs.zip"


@dataclass
class Report:
    action: str | None  # complete | fail | release | None
    body: dict
    uploads: list[dict]


class JobRun:
    def __init__(self, job: dict, gpu: Gpu, config, api, outbox, gpus: list[Gpu] | None = None,
                 egress_policy: egress.EgressPolicy | None = None):
        self.job = job
        self.job_id = str(job["job_id"])
        self.workload = str(job.get("workload", ""))
        self.params = job.get("params") or {}
        self.time_limit_s = float(job.get("time_limit_s") or 3600)
        self.gpu = gpu
        self.gpus = list(gpus or [gpu])  # a job spec's gpu_count slots, gpu first
        self.config = config
        self.api = api
        self.outbox = outbox
        self.stop = StopRequest()
        self.result: dict | None = None
        self.artifacts: list[str] = []
        self.error: dict | None = None
        self.outcome: Outcome | None = None
        self.report: Report | None = None
        self.directory = Path(config.work_dir) / "jobs" / f"{self.job_id}-a{job.get('attempt', 0)}"
        # an egress job's bounds: the provider's settings (a test may pass its own; nothing else can)
        self.egress_policy = egress_policy

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> Report:
        channel = JobChannel(
            self.api, self.job_id, self.config.log_interval_seconds, self.config.log_batch_attempts,
            on_gone=lambda: self.stop.request("lost"), on_cancelled=self._cancelled_by_the_cloud,
        ).start()
        self.channel = channel
        channel.set_progress(0.0, f"started on {self.gpu.name}")
        try:
            if self.stop.is_set():
                self.report = Report("release", {"job_ids": [self.job_id]}, [])
            elif self.workload in CHILD_WORKLOADS:
                self.report = self._run_child_workload(channel)
            elif self.workload == "script":
                self.report = self._run_script(channel)
            elif self.workload == SPEC_WORKLOAD:
                self.report = self._run_spec(channel)
            else:
                self.report = Report("fail", {"error": f"unknown workload {self.workload!r}", "retryable": False}, [])
        except Exception as exc:  # an agent-side problem: let another provider try
            log.exception("job %s failed inside the agent", self.job_id)
            self.report = Report("fail", {"error": f"the provider's agent failed: {type(exc).__name__}: {exc}"[:300],
                                          "retryable": True}, [])
        finally:
            channel.close()
        if self.report.action:
            self.outbox.put(self.job_id, self.report.action, self.report.body, self.report.uploads)
        detail = self.report.body.get("error") if self.report.action == "fail" else None
        log.info("job %s finished: %s%s", self.job_id, self.report.action or (self.outcome and self.outcome.reason),
                 f" ({detail})" if detail else "")
        return self.report

    # ------------------------------------------------------------------ workloads
    def _visible_devices(self) -> str:
        return "" if self.gpu.is_cpu else ",".join(gpu.uuid for gpu in self.gpus)

    def _run_child_workload(self, channel: JobChannel) -> Report:
        out_dir = self.directory / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        job_file = self.directory / "job.json"
        job_file.write_text(json.dumps({"workload": self.workload, "params": self.params}), encoding="utf-8")
        env = isolation.scrubbed_environment(self._visible_devices(), str(self.directory))
        env["PYTHONPATH"] = AGENT_PACKAGE_ROOT
        os.makedirs(env["TMPDIR"], exist_ok=True)
        child = ChildProcess(
            [sys.executable, "-m", "depu_agent.workloads.run", "--job", str(job_file), "--out", str(out_dir),
             "--events-fd", EVENTS_FD],
            env=env, cwd=str(self.directory), on_line=channel.add_line,
            on_event=lambda event: self._on_event(event, channel),
            max_output_bytes=self.config.max_output_bytes, max_line_chars=self.config.max_log_line_chars,
        ).start()
        self.outcome = child.wait(self.time_limit_s, self.stop, self.config.cancel_grace_seconds)
        interrupted = self._interrupted_report()
        if interrupted:
            return interrupted
        if self.result is not None:
            uploads = [{"name": name, "path": str(out_dir / name)} for name in self.artifacts
                       if (out_dir / name).is_file()]
            return Report("complete", {"result": self._with_run_facts(self.result)}, uploads)
        if self.error is not None:
            return Report("fail", {"error": self.error["error"], "retryable": bool(self.error["retryable"])}, [])
        return Report("fail", {"error": failures.exit_reason(f"the {self.workload} workload", self.outcome),
                               "retryable": True}, [])

    def _run_script(self, channel: JobChannel) -> Report:
        try:
            source = self._script_source()
        except ValueError as exc:
            return Report("fail", {"error": str(exc), "retryable": False}, [])
        try:
            plan = isolation.plan_script(
                job_id=self.job_id, script=source, gpu_index=self.gpu.index, on_cpu=self.gpu.is_cpu,
                time_limit_s=self.time_limit_s, config=self.config, gpu_uuid=self._visible_devices() or None,
            )
        except (isolation.SandboxUnusable, OSError) as exc:  # this machine's fault: another provider may try
            return Report("fail", {"error": f"sandbox could not start: {exc}"[:500], "retryable": True}, [])
        channel.add_line(f"[depu] running your script in a {plan.kind} sandbox")
        return self._run_plan(plan, channel)

    def _run_spec(self, channel: JobChannel) -> Report:
        """A job spec: setup (its environment from the cache, or built now), unbilled and bounded, then its
        code, billed from the moment it starts (the 'running' phase tells the cloud)."""
        channel.set_progress(0.0, "setting up: preparing the environment", phase="setup")
        command = self.params.get("command") if isinstance(self.params.get("command"), str) else None
        try:
            source = b"" if command else self._script_source()
        except ValueError as exc:
            return Report("fail", {"error": str(exc), "retryable": False}, [])
        image = str(self.params.get("image") or "default")
        if image != "default":
            return self._run_in_container(channel, image, command, source)
        try:
            user = isolation.job_user(self.config, self.gpu.index)
            runtime = isolation.runtime_for(user, self.config)
        except (isolation.SandboxUnusable, OSError) as exc:
            return Report("fail", {"error": f"sandbox could not start: {exc}"[:500], "retryable": True}, [])
        environment = None
        try:
            lines = envcache.requirement_lines(self.params.get("requirements") or [])
            if lines:
                channel.add_line(f"[depu] setup: the environment for {len(lines)} requirement(s)")
                environment = envcache.ensure(self.config, runtime, lines, channel.add_line)
                channel.add_line("[depu] setup: environment " + (
                    "cached on this machine" if environment.hit else f"built in {environment.seconds:g} s"))
        except (envcache.SetupFailed, OSError) as exc:
            return Report("fail", {"error": f"setup failed (nothing was billed): {exc}"[:600], "retryable": False}, [])
        if self.stop.is_set():
            return self._interrupted_report() or Report("release", {"job_ids": [self.job_id]}, [])
        variables = self.params.get("env") if isinstance(self.params.get("env"), dict) else {}
        proxy = None
        if self.params.get("network") == egress.NETWORK_EGRESS:
            if not self.config.allow_egress:  # the cloud should not have offered it: another provider may
                return Report("fail", {"error": "this provider does not allow egress", "retryable": True}, [])
            try:
                hosts = egress.job_hosts(self.params.get("egress_hosts"))
            except egress.Refused as exc:  # the cloud's spec refuses the same: a malformed offer
                return Report("fail", {"error": f"egress_hosts: {exc}"[:600], "retryable": False}, [])
            policy = self.egress_policy or egress.policy_for(self.config)
            provider = egress.provider_hosts(self.config)  # the provider's list holds whatever the policy says
            effective = egress.effective_hosts(provider, hosts)
            if effective is not None and not effective:  # the cloud places a job only inside the provider's list
                return Report("fail", {"error": "this provider's egress reaches none of this job's egress_hosts "
                                       f"(it allows only {', '.join(provider or ())})"[:600], "retryable": True}, [])
            if effective is not None:
                if hosts is not None and provider is not None and hostlist.uncovered(hosts, provider):
                    channel.add_line("[depu] egress: this provider does not allow "
                                     f"{', '.join(hostlist.uncovered(hosts, provider))[:300]}")
                policy = dataclasses.replace(policy, hosts=effective)
                channel.add_line(f"[depu] egress: only to {', '.join(effective)[:500]}"
                                 + (" (this provider's list)" if hosts is None else ""))
            proxy = egress.EgressProxy(policy, channel.add_line, self.config.sandbox_workspace_dir or None)
        try:
            return self._run_spec_code(channel, command, source, runtime, environment, variables, proxy)
        finally:
            if proxy is not None:
                proxy.close()
                channel.add_line(f"[depu] egress: {len(proxy.destinations)} connection(s), "
                                 f"{proxy.bytes_moved} bytes, {len(proxy.refusals)} refused")

    def _run_spec_code(self, channel: JobChannel, command: str | None, source: bytes, runtime, environment,
                       variables: dict, proxy: egress.EgressProxy | None) -> Report:
        program = isolation.JobProgram(
            command=command, gpu_indices=[gpu.index for gpu in self.gpus], visible_devices=self._visible_devices(),
            variables={str(k): str(v) for k, v in variables.items()},
            python=environment.python if environment else runtime.python,
            env_root=environment.path if environment else None,
            egress_folder=str(proxy.folder) if proxy is not None else None)
        try:
            plan = isolation.plan_script(
                job_id=self.job_id, script=source, gpu_index=self.gpu.index, on_cpu=self.gpu.is_cpu,
                time_limit_s=self.time_limit_s, config=self.config, use_docker=False, job=program)
        except (isolation.SandboxUnusable, OSError) as exc:
            return Report("fail", {"error": f"sandbox could not start: {exc}"[:500], "retryable": True}, [])
        refused = self._fetch_inputs(plan, channel)
        if refused is not None:
            return refused
        channel.add_line(f"[depu] running your {'command' if command else 'script'} on {len(self.gpus)} "
                         f"slot(s) in a {plan.kind} sandbox" + (
                             f", egress through the provider's filtering proxy (http_proxy=127.0.0.1:"
                             f"{egress.PROXY_PORT})" if proxy is not None else ", no network"))
        channel.set_progress(0.0, "running your code", phase="running")
        return self._run_plan(plan, channel, zip_many=True, facts={"env_hash": environment.hash if environment else None,
                                                          "env_cached": environment.hit if environment else None})

    def _fetch_inputs(self, plan, channel: JobChannel) -> Report | None:
        """The job's input files into its workspace (setup, unbilled); a failure ends the job unbilled, with
        the workspace removed, and is the renter's (a file missing or over the cap), so it is not retried."""
        try:
            inputs.fetch(self.job.get("inputs") or [], Path(plan.cwd) / isolation.INPUTS_DIR, plan.owner_uid,
                         self.config.max_input_mb * 1024 * 1024, channel.add_line)
        except (envcache.SetupFailed, OSError) as exc:
            isolation.remove_workspace(plan)
            return Report("fail", {"error": f"setup failed (nothing was billed): {exc}"[:600], "retryable": False}, [])
        return None

    def _run_in_container(self, channel: JobChannel, image: str, command: str | None, source: bytes) -> Report:
        """A job spec in the renter's image: the image from this machine's store or pulled (setup, unbilled),
        then its command (or script, by the image's own python) in a container as locked down as the sandbox."""
        if self.params.get("network") not in (None, "none"):  # the egress bridge exists for the sandbox only
            return Report("fail", {"error": "a job in your own image has no network: egress is offered with the "
                                            "default image only (nothing was billed)", "retryable": False}, [])
        try:
            ready = containers.ensure_image(self.config, image, channel.add_line)
            channel.add_line("[depu] setup: image " + ("cached on this machine" if ready.hit else "pulled"))
        except (envcache.SetupFailed, OSError, subprocess.SubprocessError) as exc:
            # this machine cannot get or run the image: another provider may (the cloud excludes this one)
            return Report("fail", {"error": f"setup failed (nothing was billed): {exc}"[:600], "retryable": True}, [])
        if self.stop.is_set():
            return self._interrupted_report() or Report("release", {"job_ids": [self.job_id]}, [])
        variables = self.params.get("env") if isinstance(self.params.get("env"), dict) else {}
        program = ["/bin/sh", "-c", command] if command else ["python", "-s", isolation.SCRIPT_NAME]
        try:
            plan = containers.plan_container(
                self.config, job_id=self.job_id, script=source, reference=image, program=program,
                variables={str(k): str(v) for k, v in variables.items()},
                gpu_indices=[gpu.index for gpu in self.gpus], visible_devices=self._visible_devices(),
                on_cpu=self.gpu.is_cpu)
        except OSError as exc:
            return Report("fail", {"error": f"sandbox could not start: {exc}"[:500], "retryable": True}, [])
        refused = self._fetch_inputs(plan, channel)
        if refused is not None:
            return refused
        channel.add_line(f"[depu] running your {'command' if command else 'script'} on {len(self.gpus)} "
                         f"slot(s) in a container of {image}")
        channel.set_progress(0.0, "running your code", phase="running")
        return self._run_plan(plan, channel, zip_many=True, facts={"image": image, "image_cached": ready.hit})

    def _run_plan(self, plan, channel: JobChannel, *, zip_many: bool = False, facts: dict | None = None) -> Report:
        try:
            try:
                child = plan.start(on_line=channel.add_line, max_output_bytes=self.config.max_output_bytes,
                                   max_line_chars=self.config.max_log_line_chars)
            except OSError as exc:
                reason = f"sandbox could not start: cannot execute {plan.argv[0]}: {exc.strerror or exc}"
                return Report("fail", {"error": reason[:500], "retryable": True}, [])
            self.outcome = child.wait(self.time_limit_s, self.stop, self.config.cancel_grace_seconds)
            if not plan.ended():  # outputs are read only once nothing of the job can change them
                return Report("fail", {"error": "the sandbox did not end: processes of the job were still "
                                                "running", "retryable": True}, [])
            interrupted = self._interrupted_report()
            if interrupted:
                return interrupted
            if self.outcome.returncode != 0:
                return Report("fail", {"error": failures.exit_reason("your script", self.outcome),
                                       "retryable": False}, [])
            kept = self.directory / "out"
            kept.mkdir(parents=True, exist_ok=True)
            left_out: list[str] = []
            uploads = [{"name": name, "path": str(path)} for name, path in isolation.collect_outputs(
                plan, kept, self.config.max_artifact_mb * 1024 * 1024, self.config.max_artifact_files, left_out)]
            result = {"exit_code": 0, "output_files": [item["name"] for item in uploads], "sandbox": plan.kind,
                      **(facts or {})}
            if left_out:
                result["outputs_left_out"] = left_out[:20]
            if zip_many and len(uploads) > 1:
                uploads = [{"name": ZIP_NAME, "path": str(_zip(uploads, self.directory / ZIP_NAME))}]
                result["outputs_zip"] = ZIP_NAME
            return Report("complete", {"result": self._with_run_facts(result)}, uploads)
        finally:
            isolation.remove_workspace(plan)

    def _script_source(self) -> bytes:
        limit = self.config.script_max_bytes
        if self.job.get("script_url"):
            try:
                with requests.get(self.job["script_url"], stream=True, timeout=30) as response:
                    response.raise_for_status()
                    data = response.raw.read(limit + 1, decode_content=True)
            except requests.RequestException as exc:
                raise RuntimeError(f"could not fetch the script ({type(exc).__name__})") from exc
        elif isinstance(self.params.get("source"), str):
            data = self.params["source"].encode("utf-8")
        else:
            raise ValueError("a script job needs script_url or params.source")
        if len(data) > limit:
            raise ValueError(f"the script is larger than {limit} bytes")
        return data

    # ------------------------------------------------------------------ helpers
    def _on_event(self, event: dict, channel: JobChannel) -> None:
        kind = event.get("type")
        if kind == "progress":
            channel.set_progress(float(event.get("progress", 0.0)), str(event.get("message", "")),
                                 event.get("metrics"))
        elif kind == "result" and isinstance(event.get("result"), dict):
            self.result = event["result"]
            self.artifacts = [Path(str(name)).name for name in event.get("artifacts", [])]
        elif kind == "error":
            self.error = {"error": str(event.get("error", "workload failed"))[:500],
                          "retryable": bool(event.get("retryable", False))}

    def _cancelled_by_the_cloud(self) -> None:
        """The API refused a report because the user cancelled the job (logs of an ended job are refused)."""
        if not self.stop.is_set():
            log.info("job %s cancelled by the cloud", self.job_id)
        self.stop.request("cancelled")

    def _interrupted_report(self) -> Report | None:
        reason = self.outcome.reason if self.outcome else "exited"
        if reason == "timeout":
            return Report("fail", {"error": f"time limit of {self.time_limit_s:g} s reached", "retryable": False}, [])
        if reason == "shutdown":
            return Report("release", {"job_ids": [self.job_id]}, [])
        if reason in ("cancelled", "lost"):
            return Report(None, {}, [])
        return None

    def _with_run_facts(self, result: dict) -> dict:
        facts = dict(result)
        facts["duration_s"] = self.outcome.duration_s if self.outcome else None
        facts["gpu"] = self.gpu.name
        if self.outcome and self.outcome.output_truncated:
            facts["output_truncated"] = True
        return facts


def _zip(uploads: list[dict], target: Path) -> Path:
    """Many outputs as one file: the copies the agent collected (its own files, never the job's)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for item in uploads:
            archive.write(item["path"], arcname=item["name"])
    return target
