"""One job spec: what a user's own GPU job is, whoever submits it (the chat, the Mini App, an API).

A spec is the ``job`` workload. It names the code (a shell ``command``, or a script stored at submit like the
``script`` workload's), a ``requirements.txt`` the agent installs before the code starts (into an environment
cached by its hash on the provider's machine, so the same requirements start at once the next time), non-secret
environment variables, ``gpu_count`` GPUs of one machine, and a time limit. The image is the provider's default
one, or the user's own pinned by its digest (``registry/path@sha256:<64 hex>``: a tag could point at other code
by the time it runs), which goes only to an agent whose provider accepts that registry and whose container
runtime passed its start-up probe. Such an image brings its own packages: requirements come with the default
image only.

Network: ``none`` (the default) or ``egress``. A job has no network at all unless it asks for egress, and then it
runs only on a machine whose provider allows it (the matcher's rule); even there it reaches public addresses
through the agent's filtering proxy only, never the machine's loopback, its LAN or the cloud metadata address
(agent/depu_agent/egress.py, docs/security.md "Egress"). An egress job may also name the only hosts it may
reach (``egress_hosts``, depu/jobs/egress_hosts.py): the proxy then refuses every other name before resolving it.

Requirements are names with optional extras and version specifiers only: no URLs, paths, ``-e`` or pip options
(``--index-url``, ``--extra-index-url``, ``-f``): where packages come from is the provider's choice, and a line
cannot point the provider's machine at a host of the user's choosing. The agent checks the same again.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from depu.errors import UserError
from depu.jobs import workloads
from depu.jobs.egress_hosts import clean_egress_hosts

WORKLOAD = "job"
DEFAULT_IMAGE = "default"
MAX_GPUS_PER_JOB = 8  # the most GPUs one machine offers (registry.MAX_GPUS_PER_AGENT bounds it too)
MAX_COMMAND_CHARS = 4000
MAX_REQUIREMENTS_BYTES = 16 * 1024
MAX_REQUIREMENTS = 100
MAX_ENV_VARS = 32
# Input files: Telegram documents up to the Bot API's getFile limit each, at most this many and this much.
MAX_INPUT_FILES = 10
MAX_INPUT_FILE_BYTES = 20 * 1024 * 1024
MAX_INPUT_BYTES = 64 * 1024 * 1024
MAX_ENV_VALUE_CHARS = 1000
NETWORK_NONE, NETWORK_EGRESS = "none", "egress"
NETWORKS = (NETWORK_NONE, NETWORK_EGRESS)
MAX_IMAGE_CHARS = 400
# registry host[:port] / path @ sha256:digest (the agent's containers.REFERENCE reads the same)
IMAGE_REFERENCE = re.compile(r"^(?P<registry>[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?(?::[0-9]{1,5})?)"
                             r"/(?P<path>[a-z0-9]+(?:[._/-][a-z0-9]+){0,30})@(?P<digest>sha256:[0-9a-f]{64})$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# What a job may not set: how the sandbox finds its interpreter and devices, and names that hold secrets.
RESERVED_ENV = re.compile(r"^(PATH|HOME|TMPDIR|LD_.*|PYTHON.*|CUDA_VISIBLE_DEVICES|NVIDIA_.*|DEPU_.*)$", re.I)
SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_?KEY)", re.I)
# name, [extras], specifiers (==, >=, <=, ~=, !=, <, >, with versions), and nothing else
REQUIREMENT = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?)"
    r"(?P<extras>\s*\[[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\])?"
    r"(?P<spec>\s*(?:===?|>=|<=|~=|!=|<|>)\s*[A-Za-z0-9.*+!_-]+(?:\s*,\s*(?:===?|>=|<=|~=|!=|<|>)\s*[A-Za-z0-9.*+!_-]+)*)?$"
)


def requirement_lines(text: Any) -> list[str]:
    """The requirements as normalised lines (comments and blank lines dropped, lower-case names, no spaces),
    or a ``UserError`` naming the first line that is not a plain requirement."""
    if text is None or text == "":
        return []
    if not isinstance(text, str):
        raise UserError("requirements.txt must be text.")
    if len(text.encode()) > MAX_REQUIREMENTS_BYTES:
        raise UserError(f"requirements.txt must be at most {MAX_REQUIREMENTS_BYTES // 1024} KiB.")
    lines: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        found = REQUIREMENT.match(line)
        if not found:
            raise UserError(f"requirements.txt line {number} is not a package name with an optional version "
                            "(URLs, paths and pip options are not accepted: the provider chooses where packages "
                            "come from).")
        lines.append(re.sub(r"\s+", "", found.group("name").lower().replace("_", "-") + (found.group("extras") or "")
                            + (found.group("spec") or "")))
    if len(lines) > MAX_REQUIREMENTS:
        raise UserError(f"requirements.txt may list at most {MAX_REQUIREMENTS} packages.")
    return sorted(dict.fromkeys(lines))


def env_hash(lines: list[str]) -> str | None:
    """The name of the environment these requirements make (the agent computes the same, and reports the
    ones it holds ready): None when there are none to install."""
    if not lines:
        return None
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:24]


def clean_env(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict) or len(env) > MAX_ENV_VARS:
        raise UserError(f"Environment variables are at most {MAX_ENV_VARS} NAME=value pairs.")
    clean: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise UserError("An environment variable's name is letters, digits and _ (not starting with a digit).")
        if RESERVED_ENV.match(name):
            raise UserError(f"{name} is set by the sandbox and cannot be chosen.")
        if SECRET_ENV.search(name):
            raise UserError(f"{name} looks like a secret: environment variables are shown to the provider's "
                            "machine, so only non-secret values may be passed.")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or len(str(value)) > MAX_ENV_VALUE_CHARS \
                or "\x00" in str(value):
            raise UserError(f"{name}'s value must be text of at most {MAX_ENV_VALUE_CHARS} characters.")
        clean[name] = str(value)
    return clean


def clean_inputs(inputs: Any) -> list[tuple[str, bytes]]:
    """Input files as (safe name, bytes): names unique after cleaning, within the count and size caps."""
    from depu.jobs.storage import safe_name

    if not inputs:
        return []
    if not isinstance(inputs, list) or len(inputs) > MAX_INPUT_FILES:
        raise UserError(f"A job takes at most {MAX_INPUT_FILES} input files.")
    clean: dict[str, bytes] = {}
    for name, body in inputs:
        if not isinstance(body, bytes) or not 0 < len(body) <= MAX_INPUT_FILE_BYTES:
            raise UserError(f"Each input file is 1 byte to {MAX_INPUT_FILE_BYTES // (1024 * 1024)} MB.")
        safe = safe_name(str(name))
        if safe in clean:
            raise UserError(f"Two input files are both named {safe}.")
        clean[safe] = body
    if sum(map(len, clean.values())) > MAX_INPUT_BYTES:
        raise UserError(f"Input files are at most {MAX_INPUT_BYTES // (1024 * 1024)} MB together.")
    return list(clean.items())


def clean_network(value: Any) -> str:
    if value is None or value == "":
        return NETWORK_NONE
    if value not in NETWORKS:
        raise UserError("network is 'none' (the default: no network at all) or 'egress' (public addresses "
                        "through the provider's filtering proxy, on providers that allow it).")
    return value


def wants_egress(params: dict[str, Any] | None) -> bool:
    """Whether a stored job's params ask for egress (the matcher places it only where it is allowed)."""
    return (params or {}).get("network") == NETWORK_EGRESS


def clean_image(value: Any) -> str:
    """``default`` (or nothing), or an image reference pinned by digest, lower-case as registries spell it."""
    if value is None or value == "" or value == DEFAULT_IMAGE:
        return DEFAULT_IMAGE
    if not isinstance(value, str) or len(value) > MAX_IMAGE_CHARS or not IMAGE_REFERENCE.match(value):
        raise UserError("The image is the provider's default image (leave it out, or 'default') or your own as "
                        "registry/path@sha256:<64 hex digits>, pinned by its digest: tags are not accepted.")
    return value


def image_parts(reference: str) -> tuple[str, str]:
    """(registry, digest) of a pinned reference: what the matcher compares with an agent's heartbeat."""
    found = IMAGE_REFERENCE.match(reference)
    return found.group("registry"), found.group("digest")


def clean_gpu_count(value: Any) -> int:
    if isinstance(value, bool):
        raise UserError("gpu_count is a whole number.")
    try:
        count = int(value)
    except (TypeError, ValueError) as error:
        raise UserError("gpu_count is a whole number.") from error
    if count != value and not isinstance(value, str):
        raise UserError("gpu_count is a whole number.")
    if not 1 <= count <= MAX_GPUS_PER_JOB:
        raise UserError(f"gpu_count is from 1 to {MAX_GPUS_PER_JOB} (the GPUs of one machine).")
    return count


@dataclass(frozen=True)
class JobSpec:
    """A validated job: built only by ``parse``; ``params`` is what is stored and handed to the agent."""

    time_limit_s: int
    command: str | None = None
    script_name: str | None = None
    requirements: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    gpu_count: int = 1
    image: str = DEFAULT_IMAGE
    network: str = NETWORK_NONE
    egress_hosts: tuple[str, ...] | None = None  # None: any public host (with egress)

    @property
    def env_hash(self) -> str | None:
        return env_hash(list(self.requirements))

    @classmethod
    def parse(cls, body: Any, *, script_name: str | None = None, script_size: int | None = None) -> "JobSpec":
        """From a request's fields (a dict); ``script_name``/``script_size`` describe a script file sent with
        it. Raises ``UserError`` saying what to fix."""
        if not isinstance(body, dict):
            raise UserError("The job spec is an object of fields.")
        unknown = set(body) - {"command", "requirements", "env", "gpu_count", "time_limit_s", "image", "network",
                                "egress_hosts"}
        if unknown:
            raise UserError(f"Unknown job field(s): {', '.join(sorted(map(str, unknown)))[:200]}.")
        image = clean_image(body.get("image"))
        if image != DEFAULT_IMAGE and body.get("requirements"):
            raise UserError("An image of your own brings its own packages: requirements.txt goes with the default "
                            "image only.")
        network = clean_network(body.get("network"))
        if image != DEFAULT_IMAGE and network != NETWORK_NONE:
            raise UserError("Egress goes with the default image only: a job in an image of your own has no "
                            "network.")
        egress_hosts = clean_egress_hosts(body.get("egress_hosts"), egress=network == NETWORK_EGRESS)
        command = body.get("command")
        if command is not None:
            if not isinstance(command, str) or not command.strip() or len(command) > MAX_COMMAND_CHARS \
                    or "\x00" in command:
                raise UserError(f"The command is text of 1 to {MAX_COMMAND_CHARS} characters.")
            command = command.strip()
        if script_name is not None:
            workloads.validate_script_file(script_name, script_size)
        if command is None and script_name is None:
            raise UserError("A job runs a command or a script: give one of them.")
        return cls(
            time_limit_s=workloads.validate_time_limit(body.get("time_limit_s", 900)),
            command=command,
            script_name=str(script_name)[:100] if script_name else None,
            requirements=tuple(requirement_lines(body.get("requirements"))),
            env=clean_env(body.get("env")),
            gpu_count=clean_gpu_count(body.get("gpu_count", 1)),
            image=image,
            network=network,
            egress_hosts=egress_hosts,
        )

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"requirements": list(self.requirements), "env": dict(self.env),
                                  "gpu_count": self.gpu_count, "image": self.image}
        if self.command:
            params["command"] = self.command
        if self.script_name:
            params["file_name"] = self.script_name
        if self.env_hash:
            params["env_hash"] = self.env_hash
        if self.network != NETWORK_NONE:  # absent means none (jobs stored before the field had it too)
            params["network"] = self.network
        if self.egress_hosts is not None:  # absent: any public host
            params["egress_hosts"] = list(self.egress_hosts)
        if self.image != DEFAULT_IMAGE:
            params["image_registry"], params["image_digest"] = image_parts(self.image)
        return params

