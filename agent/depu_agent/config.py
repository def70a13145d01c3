"""The agent's settings: one file (JSON, or INI with an ``[agent]`` section) plus ``DEPU_AGENT_*`` overrides.

Timings are named values here, not numbers scattered through the loop, so a reader (and a test that wants a
short grace period) finds every interval in one place. The agent token is never in this file: it lives in its
own file with mode 600, so the config can be shown or shared without leaking it.
"""
from __future__ import annotations

import configparser
import dataclasses
import json
import os
import re
import socket
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path

from . import hostlist

ENV_PREFIX = "DEPU_AGENT_"


class ConfigError(ValueError):
    """The config file or an override is malformed; the message says which setting."""


@dataclass
class AgentConfig:
    api_url: str = "http://127.0.0.1:3000"
    name: str = field(default_factory=socket.gethostname)
    agent_token_file: str = ""
    work_dir: str = ""
    gpus: str = "all"
    capabilities: list[str] = field(default_factory=lambda: ["gpu"])
    fork_rpc_base_url: str = ""
    # Read by the fork host (forkhost.py) when "fork_host" is among the capabilities.
    fork_upstream_url: str = ""
    fork_anvil_path: str = ""
    fork_max_forks: int = 8

    # Protocol intervals (the API may override heartbeat_seconds and lease_seconds at register/heartbeat).
    heartbeat_seconds: float = 10.0
    lease_seconds: float = 60.0
    claim_wait_seconds: float = 20.0
    log_interval_seconds: float = 1.0
    progress_interval_seconds: float = 1.0
    request_timeout_seconds: float = 15.0
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    api_attempts: int = 5
    log_batch_attempts: int = 10
    cancel_grace_seconds: float = 10.0
    shutdown_flush_seconds: float = 15.0

    # Start-up verification (catches a GPU that is not what it claims to be).
    verify: bool = True

    # Isolation of user scripts.
    docker: str = "auto"  # auto | always | never
    docker_image: str = "pytorch/pytorch:latest"
    sandbox_user: str = "nobody"
    # When set, the job on GPU i runs as uid/gid sandbox_uid_base + i (no passwd entry needed) instead of
    # sandbox_user: concurrent jobs cannot read each other's workspaces, and everything a job left running
    # (even after setsid) is found by its uid and killed when it ends. install.sh sets it.
    sandbox_uid_base: int = 0
    sandbox_python: str = ""
    # Where the agent mirrors its interpreter and packages when the sandbox user cannot reach them where they
    # are (a checkout in a mode-700 folder): default <temp dir>/depu-sandbox-runtime-<uid>. See sandbox_runtime.
    sandbox_runtime_dir: str = ""
    # Where each job's private workspace is made (default: the system temp dir). Must be searchable by the
    # sandbox user; the start-up self-check proves it.
    sandbox_workspace_dir: str = ""
    # Without bubblewrap (bwrap) scripts are refused and the self-check names it as the fault. True runs them
    # anyway in the old restricted subprocess (no namespaces: they share the host's network, see its processes
    # and its file system as their uid may): only for a machine whose provider accepts that.
    allow_unisolated_scripts: bool = False
    script_memory_mb: int = 4096
    script_max_files: int = 256
    script_max_processes: int = 512
    script_max_file_mb: int = 512
    script_max_bytes: int = 1_000_000
    max_output_bytes: int = 4_000_000
    max_artifact_mb: int = 256
    max_artifact_files: int = 64
    max_log_line_chars: int = 2000
    # Job specs (depu_agent.envcache): where packages for a job's requirements.txt come from, the provider's
    # choice, never the renter's: a folder of wheels (or a URL) for pip's --find-links, and/or an index URL.
    # With neither, a job that needs packages fails its setup (unbilled), saying so. Only wheels are
    # installed (no package's build script runs on this machine), into environments cached by their hash.
    package_find_links: str = ""
    package_index_url: str = ""
    env_cache_dir: str = ""  # default <sandbox runtime dir>/envs
    max_cached_envs: int = 20
    setup_timeout_seconds: float = 600.0  # installing one environment (the cloud bounds the whole setup too)
    max_input_mb: int = 2048  # all of one job's input files together
    # Job specs in the renter's own image (depu_agent.containers): the registries this provider accepts images
    # from (empty: none, only the default sandbox), and the OCI runtime podman uses (runc: crun refuses cgroup
    # v1 hosts). Offered only when the start-up probe container runs.
    container_registries: list[str] = field(default_factory=list)
    container_oci_runtime: str = "runc"
    # Registries on this machine's loopback that podman may pull from over plain HTTP (``--tls-verify=false``
    # on that pull alone; a test or a local mirror). Empty by default; a name that is not loopback
    # (localhost or 127.x.x.x, with an optional port) is refused at load. Every other pull verifies TLS.
    container_insecure_loopback_registries: list[str] = field(default_factory=list)
    # A listed registry whose certificate is signed by the provider's own CA: registry host[:port] -> that CA's
    # PEM file. Each pull from it trusts that CA (besides the system's) through a --cert-dir the agent makes
    # for that pull alone under work_dir; TLS is still verified, name included. Checked at load: a listed
    # registry, a readable PEM certificate, never one also marked insecure.
    container_registry_ca_files: dict[str, str] = field(default_factory=dict)
    # A CPU-only machine may offer several job slots (a job spec's gpu_count counts them like GPUs).
    cpu_slots: int = 1
    # Egress (depu_agent.egress): a job spec may ask for it only where the provider allows it. Off by default;
    # when on, such a job reaches public addresses (ports 80 and 443) through the agent's filtering proxy,
    # never this machine's loopback, its LAN or the cloud metadata address. Told to the cloud with each
    # heartbeat; renters see it on the offer.
    allow_egress: bool = False
    # The only hosts this provider's egress reaches (names, or *.name for every name below one; the job spec's
    # syntax, depu_agent.hostlist), checked at load. Empty: any public host. A job's own list then narrows it
    # further (only names both allow); the cloud places here only jobs whose list lies inside this one, never
    # a job without a list (it asked for any public host). Told to the cloud with each heartbeat.
    egress_hosts: list[str] = field(default_factory=list)
    egress_max_connections: int = 16  # one job's connections open at once
    egress_max_mb: int = 2048  # one job's bytes through the proxy, both ways together
    egress_idle_seconds: float = 60.0  # a connection with no byte either way for this long is cut

    config_path: str = ""

    def __post_init__(self) -> None:
        base = Path(self.config_path).parent if self.config_path else Path.cwd()
        if not self.agent_token_file:
            self.agent_token_file = str(base / "agent_token")
        if not self.work_dir:
            self.work_dir = str(base / "work")
        self.api_url = self.api_url.rstrip("/")
        if self.docker not in {"auto", "always", "never"}:
            raise ConfigError("docker must be one of auto, always, never")
        for name in self.container_insecure_loopback_registries:
            if not is_loopback_registry(name):
                raise ConfigError(f"container_insecure_loopback_registries: {name!r} is not a loopback registry "
                                  "(localhost or 127.x.x.x, optionally :port); plain-HTTP pulls are allowed from "
                                  "this machine's loopback only")
        _check_registry_cas(self)
        if self.egress_hosts:
            try:
                self.egress_hosts = list(hostlist.clean_list(self.egress_hosts))
            except hostlist.HostListError as error:
                raise ConfigError(f"egress_hosts: {error}") from None

    # ------------------------------------------------------------------ token file
    def read_token(self) -> str | None:
        path = Path(self.agent_token_file)
        if not path.exists():
            return None
        token = path.read_text(encoding="utf-8").strip()
        return token or None

    def write_token(self, token: str) -> None:
        """Write the token readable by this user only (created 600, never world-readable for a moment)."""
        path = Path(self.agent_token_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
        os.chmod(path.with_suffix(".tmp"), stat.S_IRUSR | stat.S_IWUSR)
        os.replace(path.with_suffix(".tmp"), path)

    def shared_gpu_indices(self, available: list[int]) -> list[int]:
        if self.gpus.strip().lower() in {"", "all"}:
            return list(available)
        wanted = [int(part) for part in self.gpus.replace(" ", "").split(",") if part]
        missing = [index for index in wanted if index not in available]
        if missing:
            raise ConfigError(f"gpus lists {missing}, which this machine does not have (it has {available})")
        return wanted

    # ------------------------------------------------------------------ persistence
    def to_file_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("config_path")
        return data

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.to_file_dict(), handle, indent=2, sort_keys=True)
            handle.write("\n")


_LOOPBACK_REGISTRY = re.compile(r"^(localhost|127(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3})(:[0-9]{1,5})?$")


def is_loopback_registry(name: str) -> bool:
    """A registry host[:port] that can only be this machine: plain HTTP to it never crosses a network."""
    return bool(_LOOPBACK_REGISTRY.match(name or ""))


def _check_registry_cas(config: AgentConfig) -> None:
    """Refuse a CA setting that would not do what the provider meant: a registry the agent never pulls from
    (a typo would silently leave TLS to the system's CAs), one also pulled over plain HTTP (the CA would never
    be checked), or a file that is not a readable PEM certificate (the pull would fail at the first job)."""
    for registry, ca_file in config.container_registry_ca_files.items():
        where = f"container_registry_ca_files[{registry!r}]"
        if registry not in config.container_registries:
            raise ConfigError(f"{where}: {registry!r} is not in container_registries")
        if registry in config.container_insecure_loopback_registries:
            raise ConfigError(f"{where}: {registry!r} is also in container_insecure_loopback_registries; a "
                              "registry is pulled either over verified TLS or over plain HTTP, not both")
        if not ca_file or not os.path.isabs(ca_file) or not os.path.isfile(ca_file):
            raise ConfigError(f"{where}: {ca_file!r} is not an existing file (an absolute path is needed)")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{where}: {ca_file!r} is not a readable PEM CA certificate ({exc})") from exc


def _coerce(name: str, kind: type | str, raw) -> object:
    try:
        if kind in (dict[str, str], "dict[str, str]"):
            if isinstance(raw, str):  # an INI value or an environment override: JSON, or host=path,host=path
                text = raw.strip()
                raw = json.loads(text) if text.startswith("{") else dict(
                    part.split("=", 1) for part in text.split(",") if part.strip())
            if not isinstance(raw, dict):
                raise ValueError(raw)
            return {str(key).strip(): str(value).strip() for key, value in raw.items()}
        if kind in (list[str], "list[str]"):
            if isinstance(raw, list):
                return [str(item) for item in raw]
            return [part.strip() for part in str(raw).split(",") if part.strip()]
        if kind in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            value = str(raw).strip().lower()
            if value not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return value in {"1", "true", "yes", "on"}
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: cannot read {raw!r} as {kind}") from exc


def _read_file(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return data
    parser = configparser.ConfigParser()
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ConfigError(f"{path}: invalid INI ({exc})") from exc
    if not parser.has_section("agent"):
        raise ConfigError(f"{path}: needs an [agent] section")
    return dict(parser.items("agent"))


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None, **overrides) -> AgentConfig:
    """Settings from the file at ``path`` (optional), then ``DEPU_AGENT_<NAME>`` variables, then ``overrides``."""
    environ = os.environ if environ is None else environ
    fields = {item.name: item.type for item in dataclasses.fields(AgentConfig)}
    values: dict[str, object] = {}
    if path is not None and Path(path).exists():
        for key, raw in _read_file(Path(path)).items():
            if key not in fields:
                raise ConfigError(f"unknown setting {key!r} in {path}")
            values[key] = _coerce(key, fields[key], raw)
    for key, kind in fields.items():
        env_name = ENV_PREFIX + key.upper()
        if env_name in environ:
            values[key] = _coerce(key, kind, environ[env_name])
    for key, raw in overrides.items():
        if raw is not None:
            values[key] = _coerce(key, fields[key], raw)
    values["config_path"] = str(path) if path is not None else ""
    return AgentConfig(**values)
