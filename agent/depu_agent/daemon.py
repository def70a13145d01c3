"""The agent's protocol with the DePU API, in one place.

States:  STARTING -> REGISTERING (only without a token) -> SERVING -> DRAINING -> STOPPED
Threads: heartbeat (every heartbeat_seconds: metrics, running jobs, free GPUs; obeys cancels and renews
         leases), claim loop (long-polls /agent/claim whenever a shared GPU is idle), one per running job,
         the outbox sender (final reports, retried until the API takes them), and the fork host if enabled.
Timings: every interval is a named setting in config.AgentConfig.

A 401 anywhere means this agent's token is no longer valid: it stops claiming and exits with EXIT_REJECTED.
SIGTERM/SIGINT: stop claiming, stop running jobs (SIGTERM, grace, SIGKILL), release them to the cloud so they
run elsewhere, flush the outbox for up to shutdown_flush_seconds, exit.
"""
from __future__ import annotations

import importlib.util
import logging
import signal
import threading
import time
from pathlib import Path

from . import __version__, challenge, containers, envcache, forktls, gpus, verify_runner
from .api import AgentRejected, ApiClient, ApiUnavailable, Backoff
from .job import JobRun
from .outbox import Outbox

log = logging.getLogger(__name__)

RENTAL_CAPABILITY = "gpu"  # runs renters' jobs (a CPU-only agent declares it too); fork hosts say "fork_host"
EXIT_OK, EXIT_REJECTED, EXIT_NOT_REGISTERED, EXIT_UNVERIFIED = 0, 3, 4, 5


_UNCHECKED = "unchecked"


def check_sandbox(config) -> str | None:
    """Why this agent cannot run renters' jobs, or None: a real script through the sandbox, at start-up and
    before registering, so the cloud never sees the agent as able to take work while it cannot."""
    from . import isolation

    if RENTAL_CAPABILITY not in config.capabilities:
        return None
    fault = isolation.self_check(config)
    if fault:
        log.error("this agent takes no jobs: %s", fault)
    else:
        log.info("sandbox self-check passed")
    if containers.offered(config):  # a failed probe only withdraws the container offer, not the agent
        container_fault = containers.check(config)
        if container_fault:
            log.error("no jobs in renters' images here (%s): only the default sandbox is offered", container_fault)
        else:
            log.info("container probe passed: images from %s are offered", ", ".join(config.container_registries))
    return fault


def egress_offered(config) -> str:
    """The provider's egress policy as the cloud is told it: "allowed" only when the provider set
    allow_egress and the bubblewrap sandbox (a network namespace per job) is what runs the jobs."""
    from . import egress, isolation

    usable = config.allow_egress and isolation.bwrap_path() is not None
    return "allowed" if usable else egress.NETWORK_NONE


class Agent:
    def __init__(self, config, api: ApiClient | None = None, fault: str | None = _UNCHECKED):
        self.config = config
        self.stop = threading.Event()      # stop claiming, wind down
        self.hard_stop = threading.Event()  # abandon retries (after the shutdown flush deadline)
        self.rejected = threading.Event()
        self.api = api or ApiClient(
            config.api_url, token=config.read_token(), timeout=config.request_timeout_seconds,
            attempts=config.api_attempts,
            backoff=Backoff(config.backoff_initial_seconds, config.backoff_max_seconds), stop=self.hard_stop,
        )
        self.outbox = Outbox(Path(config.work_dir) / "outbox", self.api)
        self.devices = {gpu.index: gpu for gpu in gpus.discover(config.cpu_slots)}
        self.shared = config.shared_gpu_indices(sorted(self.devices))
        self.jobs: dict[int, JobRun] = {}  # gpu index -> running job (a job spec may hold several)
        self.lock = threading.Lock()
        self.slot_freed = threading.Event()
        self.heartbeat_seconds = config.heartbeat_seconds
        self.lease_seconds = config.lease_seconds
        self.state = "STARTING"
        self.threads: list[threading.Thread] = []
        # Why this agent cannot take work (its sandbox cannot run a script), or None. Sent with every
        # heartbeat so the provider sees it in /provider and the matcher offers it nothing.
        self.fault = fault
        # The cloud asks for a hardware challenge (heartbeat answer); answered when every GPU is idle
        self.challenge_due = threading.Event()

    # ------------------------------------------------------------------ entry
    def run(self) -> int:
        if not self.api.has_token:
            log.error("no agent token at %s: run `depu-agent register` first", self.config.agent_token_file)
            return EXIT_NOT_REGISTERED
        Path(self.config.work_dir).mkdir(parents=True, exist_ok=True)
        token_mode = Path(self.config.agent_token_file).stat().st_mode & 0o077
        if token_mode:
            log.warning("agent token file %s is readable by others (mode %o): chmod 600 it",
                        self.config.agent_token_file, Path(self.config.agent_token_file).stat().st_mode & 0o777)
        self._warn_about_isolation()
        if self.fault == _UNCHECKED:
            self.fault = check_sandbox(self.config)
        self.state = "SERVING"
        log.info("serving GPUs %s as %r (agent %s)", self.shared, self.config.name, __version__)
        self._start_thread(self._heartbeat_loop, "heartbeat")
        self._start_thread(lambda: self.outbox.run(self.hard_stop, fatal=self.rejected), "outbox")
        self._start_fork_host()
        try:
            if self.fault is None:
                self._claim_loop()
            else:
                self.stop.wait()  # heartbeats go on, carrying the fault; forks are still hosted
        except AgentRejected as exc:
            log.error("%s: stopping", exc)
            self.rejected.set()
        self._drain()
        return EXIT_REJECTED if self.rejected.is_set() else EXIT_OK

    def _warn_about_isolation(self) -> None:
        from . import isolation

        if self.config.docker == "never" or not isolation.docker_available():
            if isolation.sandbox_user(self.config.sandbox_user) is None:
                guard = ("only bubblewrap's namespaces separate them from the agent" if isolation.bwrap_path()
                         else "they could read the agent token file")
                log.warning("renters' scripts will run as this agent's own user (no Docker, cannot switch to "
                            "%r): %s; see README, Isolation", self.config.sandbox_user, guard)

    def install_signal_handlers(self) -> None:
        def request_stop(signum, _frame):
            log.info("signal %s: shutting down gracefully", signal.Signals(signum).name)
            self.stop.set()
            self.slot_freed.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def _start_thread(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _start_fork_host(self) -> None:
        if "fork_host" not in self.config.capabilities:
            return
        if importlib.util.find_spec("depu_agent.forkhost") is None:
            log.warning("fork_host capability set but this agent has no fork host module")
            return
        from .forkhost import ForkHost

        host = ForkHost(self.api, self.config)
        self._start_thread(lambda: host.run(self.stop), "fork-host")

    # ------------------------------------------------------------------ slots
    def free_gpus(self) -> list[int]:
        with self.lock:
            return [index for index in self.shared if index not in self.jobs]

    def running_job_ids(self) -> list[str]:
        with self.lock:
            running = list(dict.fromkeys(run.job_id for run in self.jobs.values()))
        return running + [job_id for job_id in self.outbox.pending_job_ids() if job_id not in running]

    # ------------------------------------------------------------------ heartbeat
    def _heartbeat_loop(self) -> None:
        while not self.stop.is_set() and not self.rejected.is_set():
            started = time.monotonic()
            try:
                self.heartbeat()
            except AgentRejected:
                log.error("heartbeat rejected: this agent's token is no longer valid")
                self.rejected.set()
                self.stop.set()
                self.slot_freed.set()
                return
            except ApiUnavailable as exc:
                log.warning("heartbeat failed (%s); running jobs continue", exc)
            except Exception:  # a bad answer or a metrics read must not end the heartbeats
                log.exception("heartbeat step failed; next one in %.0f s", self.heartbeat_seconds)
            self.stop.wait(max(0.0, self.heartbeat_seconds - (time.monotonic() - started)))

    def heartbeat(self) -> dict:
        body = {
            "metrics": gpus.metrics(self.shared),
            "running_jobs": self.running_job_ids(),
            "free_gpus": self.free_gpus(),
            "fault": self.fault,
            "env_hashes": envcache.ready_hashes(self.config),  # warm environments: the matcher prefers us
            "egress": egress_offered(self.config),  # the provider's policy: egress jobs only where allowed
            "egress_hosts": list(self.config.egress_hosts),  # and where to (empty: any public host)
            **containers.heartbeat_fields(self.config),  # warm images, and the registries we run images from
        }
        status, answer = self.api.post("/agent/heartbeat", body, attempts=2)
        if status >= 300:
            log.warning("heartbeat answered %s", status)
            return answer
        for job_id in answer.get("cancel") or []:
            self.cancel(str(job_id))
        if answer.get("challenge_due"):
            self.challenge_due.set()
            self.slot_freed.set()
        if answer.get("lease_seconds"):
            self.lease_seconds = float(answer["lease_seconds"])
            # at least three heartbeats per lease, so one or two lost ones never cost a job its lease
            self.heartbeat_seconds = min(self.heartbeat_seconds, self.lease_seconds / 3)
        if answer.get("renew_token") is True:
            self.renew_token()
        return answer

    def renew_token(self) -> bool:
        """Swap the agent token for a fresh one before it expires: stored first (mode 600, atomically), then
        used. A failure is retried on the next heartbeat that asks (there is a week of them); the old token
        keeps working for the API's overlap, so requests in flight meanwhile still land."""
        try:
            status, answer = self.api.post("/agent/token/renew", {}, attempts=2)
        except ApiUnavailable as exc:
            log.warning("token renewal failed (%s); retried with a later heartbeat", exc)
            return False
        token = answer.get("agent_token") if status == 200 else None
        if not isinstance(token, str) or not token:
            log.warning("token renewal answered %s; retried with a later heartbeat", status)
            return False
        self.config.write_token(token)
        self.api.set_token(token)
        log.info("agent token renewed (the new one expires in %s s)", answer.get("expires_in"))
        return True

    def cancel(self, job_id: str) -> None:
        with self.lock:
            runs = [run for run in self.jobs.values() if run.job_id == job_id]
        for run in runs:
            log.info("job %s cancelled by the cloud", job_id)
            run.stop.request("cancelled")

    # ------------------------------------------------------------------ claiming
    def _claim_loop(self) -> None:
        failures = 0
        backoff = Backoff(self.config.backoff_initial_seconds, self.config.backoff_max_seconds)
        while not self.stop.is_set() and not self.rejected.is_set():
            free = self.free_gpus()
            if self.challenge_due.is_set() and len(free) == len(self.shared):
                self.answer_challenge()
                continue
            if not free:
                self.slot_freed.wait(1.0)
                self.slot_freed.clear()
                continue
            wait = min(20.0, self.config.claim_wait_seconds)
            try:
                status, answer = self.api.post(
                    "/agent/claim", {"free_gpus": free, "wait_seconds": wait},
                    timeout=wait + self.config.request_timeout_seconds, attempts=1,
                )
            except ApiUnavailable as exc:
                failures += 1
                delay = backoff.delay(min(failures, 10))
                log.warning("claim failed (%s); next try in %.1f s", exc, delay)
                self.stop.wait(delay)
                continue
            failures = 0
            if status == 200 and isinstance(answer.get("job"), dict) and answer["job"].get("job_id"):
                try:
                    self._accept(answer["job"])
                except Exception:  # a malformed offer costs that job (handed back), not the agent
                    log.exception("could not start job %s; handing it back", answer["job"].get("job_id"))
                    self.outbox.put(str(answer["job"]["job_id"]), "release", {"job_ids": [str(answer["job"]["job_id"])]})
            elif status not in (200, 204):
                log.warning("claim answered %s: %s", status, answer)
                self.stop.wait(backoff.delay(3))

    def answer_challenge(self) -> None:
        """Run the cloud's hardware challenge on the idle devices (between jobs: none is running)."""
        self.challenge_due.clear()
        try:
            outcome = challenge.answer(self.api, challenge.Prover(challenge.torch_devices(
                [self.devices[index] for index in self.shared])))
        except AgentRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - the API down, a device error: the cloud asks again
            log.warning("hardware challenge interrupted (%s); the cloud will ask again", exc)
            return
        log.log(logging.INFO if outcome.get("passed") else logging.ERROR, "hardware challenge: %s",
                outcome.get("verdict"))

    def _accept(self, job: dict) -> None:
        job_id = str(job.get("job_id"))
        index = int(job.get("gpu_index", self.free_gpus()[0] if self.free_gpus() else -1))
        indices = job.get("gpu_indices") if isinstance(job.get("gpu_indices"), list) else [index]
        indices = list(dict.fromkeys(int(i) for i in indices)) or [index]
        with self.lock:
            taken = self.stop.is_set() or index not in indices or any(
                i not in self.shared or i in self.jobs for i in indices)
            if not taken:
                run = JobRun(job, self.devices[index], self.config, self.api, self.outbox,
                             gpus=[self.devices[index]] + [self.devices[i] for i in indices if i != index])
                for i in indices:
                    self.jobs[i] = run
        if taken:
            log.warning("handing back job %s (gpus %s not available here or shutting down)", job_id, indices)
            self.outbox.put(job_id, "release", {"job_ids": [job_id]})
            return
        log.info("job %s (%s, attempt %s) on GPU %s", job_id, run.workload, job.get("attempt"),
                 ",".join(map(str, indices)))
        thread = threading.Thread(target=self._run_job, args=(indices, run), name=f"job-{job_id[:8]}", daemon=True)
        thread.start()

    def _run_job(self, indices: list[int], run: JobRun) -> None:
        try:
            run.run()
        finally:
            with self.lock:
                for index in indices:
                    self.jobs.pop(index, None)
            self.slot_freed.set()

    # ------------------------------------------------------------------ shutdown
    def _drain(self) -> None:
        self.state = "DRAINING"
        self.stop.set()
        with self.lock:
            runs = list(self.jobs.values())
        for run in runs:
            run.stop.request("shutdown")
        deadline = time.monotonic() + self.config.cancel_grace_seconds + self.config.shutdown_flush_seconds
        while time.monotonic() < deadline:
            with self.lock:
                if not self.jobs:
                    break
            time.sleep(0.1)
        if not self.rejected.is_set():
            while time.monotonic() < deadline:
                try:
                    if self.outbox.flush():
                        break
                except AgentRejected:
                    break
                time.sleep(0.5)
        self.hard_stop.set()
        self.state = "STOPPED"
        left = self.outbox.pending_job_ids()
        if left:
            log.warning("reports for jobs %s not delivered; they are kept and sent at next start", left)
        log.info("stopped")


def register(config, provider_token: str, api: ApiClient | None = None, fault: str | None = None) -> dict:
    """Discover and verify the GPUs, register with the provider token, store the agent token (mode 600).
    ``fault`` (from check_sandbox) is registered with it, so the agent is never offered work it cannot run."""
    api = api or ApiClient(config.api_url, timeout=config.request_timeout_seconds, attempts=config.api_attempts)
    devices = gpus.discover(config.cpu_slots)
    shared = config.shared_gpu_indices([gpu.index for gpu in devices])
    offered = [gpu for gpu in devices if gpu.index in shared]
    benchmark = verify_runner.verify_devices(offered, config) if config.verify else {
        "device": verify_runner.torch_device_of(offered[0]), "fp32_tflops": None, "bf16_tflops": None, "mem_bandwidth_gbs": None,
        "verified": False}
    body = {
        "provider_token": provider_token,
        "name": config.name,
        # a CPU-only machine offers no GPU: the cloud files it under the "cpu" class
        "gpus": [gpu.as_dict() for gpu in offered if not gpu.is_cpu],
        "capabilities": list(config.capabilities),
        "benchmark": benchmark,
        "version": __version__,
        "egress": egress_offered(config),
        "egress_hosts": list(config.egress_hosts),
    }
    if not body["gpus"] and len(offered) > 1:
        body["cpu_slots"] = len(offered)  # a CPU-only machine running several jobs at once
    if config.fork_rpc_base_url:
        body["fork_rpc_base_url"] = config.fork_rpc_base_url
        # an https fork front's certificate, made now and kept in work_dir: the API pins its fingerprint
        pin = forktls.pin_for_registration(config.work_dir, config.fork_rpc_base_url)
        if pin:
            body["fork_tls_sha256"] = pin
    if fault:
        body["fault"] = fault
    status, answer = api.post("/agent/register", body)
    if status != 201 or not answer.get("agent_token"):
        raise RegistrationFailed(f"register answered HTTP {status}: {answer.get('error') or answer.get('message') or answer}")
    config.write_token(answer["agent_token"])
    outcome = {"passed": False, "verdict": answer.get("verdict")}
    if answer.get("challenge_due"):
        # the benchmark above is only the agent's word: the cloud verifies with its own challenge, now
        api.set_token(answer["agent_token"])
        outcome = challenge.answer(api, challenge.Prover(challenge.torch_devices(offered)))
    if answer.get("heartbeat_seconds"):  # the cloud's value is the longest gap it tolerates
        config.heartbeat_seconds = min(config.heartbeat_seconds, float(answer["heartbeat_seconds"]))
    if answer.get("lease_seconds"):
        config.lease_seconds = float(answer["lease_seconds"])
    return {"agent_id": answer.get("agent_id"), "benchmark": benchmark, "gpus": body["gpus"],
            "verified": bool(outcome.get("passed")), "verdict": outcome.get("verdict")}


class RegistrationFailed(RuntimeError):
    pass
