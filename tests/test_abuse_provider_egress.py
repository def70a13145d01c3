"""Abuse (issue 15 §5): a job that asked for egress, on a provider that allows it, tries to reach what egress
must never reach: the provider's loopback, its LAN, the cloud metadata address, by every spelling. Each
attempt goes through the real job path (``JobRun`` -> bubblewrap with its own network namespace -> the
in-sandbox bridge -> the agent's filtering proxy outside), and each fails; a loopback server started here
records that not one connection reached it.

The internet is not reachable from this machine, so the ALLOWED path is shown with a test-only policy whose
``treat_as_public`` lets 127.0.0.1 stand for a public address (a constructor argument: no agent setting and
no job field can set it): the script fetches from the test's server through the proxy, over plain http and
through CONNECT, while the default policy refuses the very same request.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import throwaway_pki
from agent_process import private_uid_base

from depu_agent import daemon, egress, gpus, isolation
from depu_agent.api import ApiClient, Backoff
from depu_agent.config import ConfigError, load_config
from depu_agent.job import JobRun
from depu_agent.outbox import Outbox

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not isolation.can_switch_user(), reason="needs root or CAP_SETUID (the installed agent has it)"),
    pytest.mark.skipif(isolation.bwrap_path() is None, reason="bubblewrap is installed by make deps and install.sh"),
]

SLOT_UID_BASE = private_uid_base(3)
REBIND_NAME = "rebind.depu-test"  # what an attacker's DNS would answer with a loopback address
FLIP_NAME = "flip.depu-test"  # public (by the test override) to the first lookup, loopback to any later one


class Api(BaseHTTPRequestHandler):
    """The agent API's job routes: keeps each job's log lines."""

    lines: dict[str, list[str]] = {}
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path.endswith("/logs"):
            job_id = self.path.split("/")[3]
            with Api.lock:
                Api.lines.setdefault(job_id, []).extend(body.get("lines") or [])
        payload = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class Target(BaseHTTPRequestHandler):
    """A server on the provider's loopback (as a fork host's anvil, or a local admin panel, would be): it
    counts every connection that reaches it."""

    def setup(self):
        with self.server.lock:
            self.server.connections += 1
        super().setup()

    def do_GET(self):  # noqa: N802
        payload = f"secret of {self.server.server_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def serve(handler, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), handler)
    server.connections = 0
    server.lock = threading.Lock()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class TlsTarget(Target):
    """Target over TLS (its server counts each TCP connection before any handshake)."""

    def setup(self):
        self.request.do_handshake()
        BaseHTTPRequestHandler.setup(self)


@pytest.fixture
def tls_target(tmp_path):
    """A TLS front on the provider's loopback with a throwaway CA's certificate for the names a host list
    allows; ``server.names`` is each server name a handshake asked for, ``server.ca`` the CA as PEM."""
    ca = throwaway_pki.authority(tmp_path / "pki", "front")
    context = ca.issue(tmp_path / "pki", "front", dns=("allowed.test", "deep.api.wild.test"))
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _context: names.append(name)

    class Server(ThreadingHTTPServer):
        def get_request(self):
            sock, address = self.socket.accept()
            with self.lock:
                self.connections += 1
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

        def handle_error(self, request, client_address):
            pass  # a client that refuses the certificate (the no-list run below) is expected

    server = Server(("127.0.0.1", 0), TlsTarget)
    server.connections, server.lock, server.names = 0, threading.Lock(), names
    server.ca = ca.ca_file.read_text()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api():
    Api.lines = {}
    server = serve(Api)
    yield ApiClient(f"http://127.0.0.1:{server.server_address[1]}", token="t", attempts=2, backoff=Backoff(0.01, 0.02))
    server.shutdown()
    server.server_close()


@pytest.fixture
def target():
    server = serve(Target)
    yield server
    server.shutdown()
    server.server_close()


def agent_config(tmp_path, **settings):
    config = load_config(tmp_path / "agent" / "agent.json", environ={}, docker="never", work_dir=str(tmp_path / "work"),
                         cancel_grace_seconds=1, log_interval_seconds=0.1, script_max_processes=64,
                         sandbox_uid_base=SLOT_UID_BASE, **settings)
    config.write_token("depa_not-a-real-token")
    return config


def resolver(flips: list[str]):
    """The name service the proxy asks: the test's two attacker names, the host's own resolver for the rest."""

    def resolve(name: str, port: int) -> list[str]:
        if name == REBIND_NAME:
            return ["127.0.0.1"]
        if name == FLIP_NAME:
            flips.append(name)
            return ["127.0.0.1"] if len(flips) == 1 else ["127.0.0.2"]
        return egress.system_resolver(name, port)

    return resolve


def run_job(config, api, tmp_path, job_id: str, source: str, *, network: str | None = "egress",
            policy: egress.EgressPolicy | None = None, egress_hosts: list[str] | None = None,
            ) -> tuple[dict, list[str], object]:
    params = {"source": textwrap.dedent(source), "requirements": [], "env": {}, "gpu_count": 1, "image": "default"}
    if network is not None:
        params["network"] = network
    if egress_hosts is not None:  # as the cloud's spec stores it; the agent applies it to whatever policy runs
        params["egress_hosts"] = egress_hosts
    job = {"job_id": job_id, "workload": "job", "time_limit_s": 60, "attempt": 1, "params": params}
    run = JobRun(job, gpus.discover()[0], config, api, Outbox(tmp_path / "outbox", api), egress_policy=policy)
    report = run.run()
    assert report.action == "complete", report.body
    (seen,) = [item for item in report.uploads if item["name"] == "seen.json"]
    with open(seen["path"], encoding="utf-8") as handle:
        return json.load(handle), list(Api.lines.get(job_id, [])), report


# The probe: every way a script might try to get out. CONNECT requests go raw (the status line is what
# counts); plain http requests go through urllib with the proxy the sandbox's environment names.
PROBE = """
    import json, os, socket, ssl, urllib.error, urllib.request
    PORT = {port}
    CA = {ca!r}
    proxy = os.environ.get("HTTP_PROXY")
    seen = {{"proxy_env": proxy, "https_proxy_env": os.environ.get("https_proxy"),
            "egress_folder": os.path.exists("/run/depu-egress")}}

    def connect(authority):
        try:
            with socket.create_connection(("127.0.0.1", 3128), timeout=10) as sock:
                sock.sendall(f"CONNECT {{authority}} HTTP/1.1\\r\\nHost: {{authority}}\\r\\n\\r\\n".encode())
                answer = sock.recv(4096).decode(errors="replace")
                if answer.startswith("HTTP/1.1 200"):
                    sock.sendall(b"GET /through-the-tunnel HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
                    answer += "|" + b"".join(iter(lambda: sock.recv(4096), b"")).decode(errors="replace")
                return answer.split("\\r\\n")[0] + ("|" + answer.rsplit("\\r\\n", 1)[-1] if "|" in answer else "")
        except OSError as error:
            return "error " + type(error).__name__

    def fetch(url):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({{"http": proxy}} if proxy else {{}}))
        try:
            with opener.open(url, timeout=10) as answer:
                return f"{{answer.status}} {{answer.read().decode()}}"
        except urllib.error.HTTPError as error:
            return f"{{error.code}} {{error.read().decode().strip()}}"
        except OSError as error:
            return "error " + type(error).__name__

    def raw(head):  # a request head sent to the proxy as written (a Host header the URL does not name)
        try:
            with socket.create_connection(("127.0.0.1", 3128), timeout=10) as sock:
                sock.sendall(head.encode())
                return b"".join(iter(lambda: sock.recv(4096), b"")).decode(errors="replace").split("\\r\\n")[0]
        except OSError as error:
            return "error " + type(error).__name__

    def direct(host, port):
        try:
            socket.create_connection((host, port), timeout=3).close()
            return "connected"
        except OSError as error:
            return type(error).__name__

    def tls_connect(authority, sni):  # a real TLS handshake inside the tunnel, naming sni (None: no SNI)
        answer = "error"
        try:
            with socket.create_connection(("127.0.0.1", 3128), timeout=10) as sock:
                sock.sendall(f"CONNECT {{authority}} HTTP/1.1\\r\\nHost: {{authority}}\\r\\n\\r\\n".encode())
                answer = sock.recv(4096).decode(errors="replace").split("\\r\\n")[0]
                if not answer.startswith("HTTP/1.1 200"):
                    return answer
                context = ssl.create_default_context(cadata=CA)
                context.check_hostname = sni is not None
                with context.wrap_socket(sock, server_hostname=sni) as tls:
                    tls.sendall(f"GET /tls HTTP/1.1\\r\\nHost: {{sni}}\\r\\nConnection: close\\r\\n\\r\\n".encode())
                    body = b"".join(iter(lambda: tls.recv(4096), b"")).decode(errors="replace")
                return answer + "|" + body.rsplit("\\r\\n", 1)[-1]
        except OSError as error:
            return answer + "|error " + type(error).__name__

    seen["connect"] = {{authority: connect(authority) for authority in {connects!r}}}
    seen["tls"] = [[authority, sni, tls_connect(authority, sni)] for authority, sni in {tls_connects!r}]
    seen["fetch"] = {{url: fetch(url) for url in {fetches!r}}}
    seen["direct"] = {{f"{{host}}:{{port}}": direct(host, port) for host, port in {directs!r}}}
    seen["raw"] = {{head: raw(head) for head in {raws!r}}}
    open("outputs/seen.json", "w").write(json.dumps(seen))
"""


def probe(port: int, connects=(), fetches=(), directs=(), raws=(), tls_connects=(), ca: str = "") -> str:
    return PROBE.format(port=port, connects=list(connects), fetches=list(fetches), directs=list(directs),
                        raws=list(raws), tls_connects=[list(pair) for pair in tls_connects], ca=ca)


def attacks(port: int) -> dict[str, list]:
    return {
        "connects": [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"0x7f000001:{port}",
                     f"2130706433:{port}", f"0177.0.0.1:{port}", f"127.1:{port}", f"[::ffff:127.0.0.1]:{port}",
                     f"[::ffff:7f00:1]:{port}", f"{REBIND_NAME}:{port}", f"0.0.0.0:{port}", "10.0.0.1:443",
                     "192.168.1.1:443", "172.16.0.1:443", "100.64.0.1:443", "169.254.169.254:80",
                     "[fd00:ec2::254]:80", "[fe80::1]:443", "[64:ff9b::7f00:1]:443", "[2002:7f00:1::1]:443",
                     f"127.0.0.1:{port + 1 if port < 65535 else port - 1}"],
        "fetches": [f"http://127.0.0.1:{port}/", f"http://localhost:{port}/", f"http://[::1]:{port}/",
                    f"http://2130706433:{port}/", f"http://0x7f000001:{port}/", f"http://{REBIND_NAME}:{port}/",
                    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/"],
        # no proxy at all: straight at the host's loopback server, a LAN and a public address
        "directs": [("127.0.0.1", port), ("10.0.0.1", 443), ("192.0.2.1", 443), ("8.8.8.8", 53)],
    }


def test_an_egress_job_reaches_nothing_on_the_providers_loopback_lan_or_metadata_by_any_spelling(
        tmp_path, api, target):
    port = target.server_address[1]
    config = agent_config(tmp_path, allow_egress=True)
    # the test server's port opened, so every refusal below is about the address, never the port
    policy = egress.EgressPolicy(ports=frozenset({80, 443, port}), resolver=resolver([]))
    seen, lines, _report = run_job(config, api, tmp_path, "jegress-attacks", probe(port, **attacks(port)),
                                   policy=policy)
    assert seen["proxy_env"] == seen["https_proxy_env"] == f"http://127.0.0.1:{egress.PROXY_PORT}"
    for authority, answer in seen["connect"].items():
        assert answer.startswith("HTTP/1.1 403"), (authority, answer)
    for url, answer in seen["fetch"].items():
        assert answer.startswith("403 egress refused"), (url, answer)
    for where, answer in seen["direct"].items():
        assert answer in ("ConnectionRefusedError", "OSError", "TimeoutError"), (where, answer)
    assert seen["direct"]["192.0.2.1:443"] == "OSError"  # ENETUNREACH: no route out of the namespace
    assert target.connections == 0, "a connection reached the provider's loopback server"
    refused = [line for line in lines if line.startswith("[depu] egress refused")]
    assert len(refused) == len(seen["connect"]) + len(seen["fetch"]), lines
    assert any("169.254.169.254:80: 169.254.169.254: link-local" in line for line in refused), refused
    assert any(f"{REBIND_NAME}:{port}: {REBIND_NAME} resolves to 127.0.0.1: loopback" in line for line in refused)
    assert any("0x7f000001" in line and "non-standard form" in line for line in refused)
    assert any(line.startswith("[depu] egress: 0 connection(s)") for line in lines), lines[-3:]


def test_the_allowed_path_works_with_a_test_only_public_stand_in_and_the_default_policy_refuses_it(
        tmp_path, api, target):
    port = target.server_address[1]
    config = agent_config(tmp_path, allow_egress=True)
    requests = {"fetches": [f"http://127.0.0.1:{port}/page?q=1"], "connects": [f"127.0.0.1:{port}"]}
    stand_in = egress.EgressPolicy(ports=frozenset({port}), treat_as_public=frozenset({ipaddress.ip_address("127.0.0.1")}))
    seen, lines, _ = run_job(config, api, tmp_path, "jegress-allowed", probe(port, **requests), policy=stand_in)
    assert seen["fetch"][f"http://127.0.0.1:{port}/page?q=1"] == "200 secret of 127.0.0.1", seen
    assert seen["connect"][f"127.0.0.1:{port}"] == "HTTP/1.1 200 Connection established|secret of 127.0.0.1", seen
    assert target.connections == 2
    assert f"[depu] egress HTTP 127.0.0.1:{port} (127.0.0.1)" in lines, lines
    assert f"[depu] egress CONNECT 127.0.0.1:{port} (127.0.0.1)" in lines
    assert not any("secret of" in line for line in lines), "a payload reached the job log"

    default = egress.EgressPolicy(ports=frozenset({port}))
    seen, lines, _ = run_job(config, api, tmp_path, "jegress-default", probe(port, **requests), policy=default)
    assert seen["fetch"][f"http://127.0.0.1:{port}/page?q=1"].startswith("403 egress refused: 127.0.0.1: loopback")
    assert seen["connect"][f"127.0.0.1:{port}"].startswith("HTTP/1.1 403")
    assert target.connections == 2, "the default policy let a connection through"


def test_a_job_with_egress_hosts_reaches_the_hosts_it_named_and_no_other_name_is_even_resolved(
        tmp_path, api, target, tls_target):
    """Every name here resolves (through the test's name service) to 127.0.0.1, which the test-only policy
    counts as public: so the only thing that can refuse the other names is the job's own egress_hosts list,
    which the agent took from the job's params and applied to that policy. Its CONNECT tunnels carry a real
    TLS handshake to a TLS front serving both allowed names; a tunnel opened to an allowed name whose
    ClientHello asks for another (domain fronting), names none, or carries plain bytes is cut before the
    front sees a connection."""
    port, tls_port = target.server_address[1], tls_target.server_address[1]
    looked_up: list[str] = []

    def resolve(name: str, _port: int) -> list[str]:
        looked_up.append(name)
        return ["127.0.0.1"]

    stand_in = egress.EgressPolicy(ports=frozenset({port, tls_port}), resolver=resolve,
                                   treat_as_public=frozenset({ipaddress.ip_address("127.0.0.1")}))
    config = agent_config(tmp_path, allow_egress=True)
    allowed = {"fetches": [f"http://allowed.test:{port}/", f"http://api.wild.test:{port}/"],
               "tls_connects": [(f"allowed.test:{tls_port}", "allowed.test"),
                                (f"deep.api.wild.test:{tls_port}", "deep.api.wild.test")]}
    refused = {"fetches": [f"http://other.test:{port}/", f"http://127.0.0.1:{port}/", f"http://wild.test:{port}/",
                           f"http://allowed.test.other.test:{port}/"],
               "connects": [f"other.test:{port}", f"127.0.0.1:{port}", f"notallowed.test:{port}",
                            f"evilwild.test:{port}", f"0x7f000001:{port}"],
               "raws": [f"GET http://allowed.test:{port}/ HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n"]}
    # opened to an allowed name, then: another name in the ClientHello, an allowed one that is not the
    # tunnel's, no SNI at all, and (through `connects`) plain http bytes
    fronted = [(f"allowed.test:{tls_port}", "other.test"), (f"allowed.test:{tls_port}", "api.wild.test"),
               (f"allowed.test:{tls_port}", None)]
    plain_tunnels = [f"allowed.test:{tls_port}", f"deep.api.wild.test:{port}"]
    seen, lines, _ = run_job(config, api, tmp_path, "jegress-hosts", probe(
        port, connects=plain_tunnels + refused["connects"], fetches=allowed["fetches"] + refused["fetches"],
        raws=refused["raws"], tls_connects=allowed["tls_connects"] + fronted, ca=tls_target.ca),
        policy=stand_in, egress_hosts=["allowed.test", "*.wild.test"])
    for url in allowed["fetches"]:
        assert seen["fetch"][url] == "200 secret of 127.0.0.1", (url, seen)
    tls = {(authority, sni): answer for authority, sni, answer in seen["tls"]}
    for pair in allowed["tls_connects"]:
        assert tls[pair] == "HTTP/1.1 200 Connection established|secret of 127.0.0.1", (pair, tls[pair])
    assert target.connections == len(allowed["fetches"])  # and not one more: the refused ones made no connection
    assert tls_target.connections == len(allowed["tls_connects"]), "a fronted tunnel reached the TLS front"
    assert tls_target.names == [sni for _, sni in allowed["tls_connects"]]
    for pair in fronted:  # the proxy said 200, read the ClientHello and hung up: the handshake fails
        assert tls[pair].startswith("HTTP/1.1 200 Connection established|error "), (pair, tls[pair])
    for authority in plain_tunnels:
        assert "secret of" not in seen["connect"][authority], (authority, seen["connect"][authority])
    for url in refused["fetches"]:
        assert seen["fetch"][url].startswith("403 egress refused"), (url, seen["fetch"][url])
    for authority in refused["connects"]:
        assert seen["connect"][authority].startswith("HTTP/1.1 403"), (authority, seen["connect"][authority])
    [(head, answer)] = seen["raw"].items()
    assert answer.startswith("HTTP/1.1 403"), answer
    assert sorted(set(looked_up)) == ["allowed.test", "api.wild.test", "deep.api.wild.test"]  # refused: never asked
    assert "[depu] egress: only to *.wild.test, allowed.test" in lines, lines
    assert any(f"egress refused other.test:{port}: other.test is not among the hosts this job may reach" in line
               for line in lines), lines
    assert any(f"egress refused 127.0.0.1:{port}: 127.0.0.1 is an address" in line for line in lines), lines
    assert any("does not name the URL's host" in line for line in lines), lines
    for reason in ("the ClientHello asks for other.test, not allowed.test",
                   "the ClientHello asks for api.wild.test, not allowed.test", "the ClientHello names no server",
                   "the tunnel's first bytes are not a TLS handshake"):
        assert any(line.startswith(f"[depu] egress refused allowed.test:{tls_port}: {reason}") for line in lines), \
            (reason, lines)
    assert any(line.startswith(f"[depu] egress refused deep.api.wild.test:{port}: the tunnel's first bytes")
               for line in lines), lines
    reached = len(allowed["fetches"]) + len(allowed["tls_connects"])
    refusals = len(refused["fetches"]) + len(refused["connects"]) + len(refused["raws"]) + len(fronted) \
        + len(plain_tunnels)
    assert any(line.startswith(f"[depu] egress: {reached} connection(s)") and line.endswith(f", {refusals} refused")
               for line in lines), lines[-3:]

    # the same policy without the job's list reaches the other name, and a tunnel carries what it is given:
    # the list is what refused them
    seen, _, _ = run_job(config, api, tmp_path, "jegress-nolist", probe(
        port, fetches=[f"http://other.test:{port}/"], tls_connects=[(f"allowed.test:{tls_port}", "other.test")],
        ca=tls_target.ca), policy=stand_in)
    assert seen["fetch"][f"http://other.test:{port}/"] == "200 secret of 127.0.0.1", seen
    assert target.connections == len(allowed["fetches"]) + 1
    assert tls_target.connections == len(allowed["tls_connects"]) + 1  # reached; its certificate is not other.test's
    assert seen["tls"][0][2].startswith("HTTP/1.1 200 Connection established|error SSLCertVerificationError"), seen


def test_a_providers_egress_hosts_refuse_what_the_job_did_not_restrict_and_narrow_what_it_did(
        tmp_path, api, target):
    """The provider set egress_hosts; every name resolves (through the test's name service) to 127.0.0.1, which
    the test-only policy counts as public, and that policy carries no list of its own: so whatever refuses a
    name here is the provider's setting, which the agent read from its config and combined with the job's."""
    port = target.server_address[1]
    looked_up: list[str] = []

    def resolve(name: str, _port: int) -> list[str]:
        looked_up.append(name)
        return ["127.0.0.1"]

    stand_in = egress.EgressPolicy(ports=frozenset({port}), resolver=resolve,
                                   treat_as_public=frozenset({ipaddress.ip_address("127.0.0.1")}))
    config = agent_config(tmp_path, allow_egress=True, egress_hosts=["Index.test", "*.hub.test"])
    listed = [f"http://index.test:{port}/", f"http://models.hub.test:{port}/"]
    others = [f"http://other.test:{port}/", f"http://hub.test:{port}/", f"http://127.0.0.1:{port}/"]
    seen, lines, _ = run_job(config, api, tmp_path, "jprovider-nolist", probe(
        port, fetches=listed + others, connects=[f"other.test:{port}", f"evilhub.test:{port}"]), policy=stand_in)
    for url in listed:
        assert seen["fetch"][url] == "200 secret of 127.0.0.1", (url, seen)
    for url in others:
        assert seen["fetch"][url].startswith("403 egress refused"), (url, seen["fetch"][url])
    for authority, answer in seen["connect"].items():
        assert answer.startswith("HTTP/1.1 403"), (authority, answer)
    assert target.connections == len(listed)  # the refused names made no connection at all
    assert sorted(set(looked_up)) == ["index.test", "models.hub.test"]  # nor a lookup
    assert "[depu] egress: only to *.hub.test, index.test (this provider's list)" in lines, lines
    assert any(f"egress refused other.test:{port}: other.test is not among the hosts this job may reach" in line
               for line in lines), lines

    # the job names its own list: only what both allow (a narrower wildcard inside the provider's stays)
    looked_up.clear()
    both = [f"http://deep.a.hub.test:{port}/", f"http://index.test:{port}/"]
    cut = [f"http://models.hub.test:{port}/", f"http://other.test:{port}/"]  # one the job left out, one the provider
    seen, lines, _ = run_job(config, api, tmp_path, "jprovider-both", probe(port, fetches=both + cut),
                             policy=stand_in, egress_hosts=["*.a.hub.test", "index.test", "other.test"])
    for url in both:
        assert seen["fetch"][url] == "200 secret of 127.0.0.1", (url, seen)
    for url in cut:
        assert seen["fetch"][url].startswith("403 egress refused"), (url, seen["fetch"][url])
    assert target.connections == len(listed) + len(both)
    assert sorted(set(looked_up)) == ["deep.a.hub.test", "index.test"]
    assert "[depu] egress: this provider does not allow other.test" in lines, lines
    assert "[depu] egress: only to *.a.hub.test, index.test" in lines, lines

    # a job whose list the provider allows none of is handed back (retryable) before its code runs
    job = {"job_id": "jprovider-none", "workload": "job", "time_limit_s": 60, "attempt": 1,
           "params": {"command": "touch outputs/ran", "network": "egress", "egress_hosts": ["other.test", "hub.test"]}}
    report = JobRun(job, gpus.discover()[0], config, api, Outbox(tmp_path / "outbox", api),
                    egress_policy=stand_in).run()
    assert report.action == "fail" and report.body["retryable"] is True, report.body
    assert "reaches none of this job's egress_hosts" in report.body["error"] and not report.uploads
    assert target.connections == len(listed) + len(both)


def test_an_egress_hosts_list_the_agent_cannot_read_fails_the_job_before_anything_runs(tmp_path, api):
    config = agent_config(tmp_path, allow_egress=True)
    for bad in (["127.0.0.1"], ["*.test"], "allowed.test", []):
        job = {"job_id": "jegress-badhosts", "workload": "job", "time_limit_s": 60, "attempt": 1,
               "params": {"command": "touch outputs/ran", "network": "egress", "egress_hosts": bad}}
        report = JobRun(job, gpus.discover()[0], config, api, Outbox(tmp_path / "outbox", api)).run()
        assert report.action == "fail" and report.body["error"].startswith("egress_hosts: "), (bad, report.body)
        assert not report.uploads


def test_curl_in_a_job_command_uses_the_proxy_from_the_environment(tmp_path, api, target):
    port = target.server_address[1]
    config = agent_config(tmp_path, allow_egress=True)
    stand_in = egress.EgressPolicy(ports=frozenset({port}), treat_as_public=frozenset({ipaddress.ip_address("127.0.0.1")}))
    job = {"job_id": "jegress-curl", "workload": "job", "time_limit_s": 60, "attempt": 1,
           "params": {"command": f"curl -sS http://127.0.0.1:{port}/ > outputs/seen.txt", "network": "egress"}}
    report = JobRun(job, gpus.discover()[0], config, api, Outbox(tmp_path / "outbox", api),
                    egress_policy=stand_in).run()
    assert report.action == "complete", report.body
    with open(report.uploads[0]["path"], encoding="utf-8") as handle:
        assert handle.read() == "secret of 127.0.0.1"
    assert target.connections == 1


class Files(Target):
    """A folder of wheels over http (pip's --find-links), counting connections like Target."""

    folder = ""

    def do_GET(self):  # noqa: N802
        names = sorted(os.listdir(self.folder))
        if self.path == "/":
            payload = "".join(f'<a href="/{name}">{name}</a>' for name in names).encode()
        elif self.path.lstrip("/") in names:
            with open(os.path.join(self.folder, self.path.lstrip("/")), "rb") as handle:
                payload = handle.read()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if self.path == "/" else "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_pip_in_a_job_command_downloads_through_the_proxy_and_the_default_policy_stops_it(tmp_path, api):
    from test_agent_envcache import _package

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(wheels), str(_package(tmp_path / "build", "depu-probe", "VALUE = 7\n"))], check=True)
    Files.folder = str(wheels)
    server = serve(Files)
    try:
        port = server.server_address[1]
        command = (f"python -m pip download --no-deps --no-index --disable-pip-version-check --retries 0 "
                   f"--timeout 10 --trusted-host 127.0.0.1 --find-links http://127.0.0.1:{port}/ -d outputs "
                   "depu-probe > outputs/pip.txt 2>&1; echo $? > outputs/status.txt")
        config = agent_config(tmp_path, allow_egress=True)
        stand_in = egress.EgressPolicy(ports=frozenset({port}),
                                       treat_as_public=frozenset({ipaddress.ip_address("127.0.0.1")}))
        default = egress.EgressPolicy(ports=frozenset({port}))
        for policy, job_id in ((stand_in, "jegress-pip"), (default, "jegress-pip0")):
            job = {"job_id": job_id, "workload": "job", "time_limit_s": 120, "attempt": 1,
                   "params": {"command": command, "network": "egress"}}
            report = JobRun(job, gpus.discover()[0], config, api, Outbox(tmp_path / f"outbox-{job_id}", api),
                            egress_policy=policy).run()
            assert report.action == "complete", report.body
            with zipfile.ZipFile(report.uploads[0]["path"]) as outputs:
                files = {name: outputs.read(name) for name in outputs.namelist()}
            if policy is stand_in:
                assert files["status.txt"] == b"0\n", files["pip.txt"].decode()[-2000:]
                assert any(name.startswith("depu_probe-") and name.endswith(".whl") for name in files), sorted(files)
                assert server.connections >= 2  # the listing and the wheel, through the proxy
                reached = server.connections
            else:
                assert files["status.txt"] != b"0\n" and not any(name.endswith(".whl") for name in files)
                assert server.connections == reached, "the default policy let pip through"
        assert any(line.startswith(f"[depu] egress refused 127.0.0.1:{port}: 127.0.0.1: loopback")
                   for line in Api.lines["jegress-pip0"]), Api.lines["jegress-pip0"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_dns_rebinding(tmp_path, api, target):
    """The name answers a (stand-in) public address to the first lookup and a loopback one to any later: a
    proxy that checked one answer and connected by name would reach the second server. This one asks once
    and connects to what it checked."""
    port = target.server_address[1]
    victim = serve(Target, "127.0.0.2", port)  # the same port: only the address tells them apart
    try:
        flips: list[str] = []
        policy = egress.EgressPolicy(ports=frozenset({port}), resolver=resolver(flips),
                                     treat_as_public=frozenset({ipaddress.ip_address("127.0.0.1")}))
        seen, lines, _ = run_job(config := agent_config(tmp_path, allow_egress=True), api, tmp_path, "jegress-flip",
                                 probe(port, fetches=[f"http://{FLIP_NAME}:{port}/"]), policy=policy)
        assert seen["fetch"][f"http://{FLIP_NAME}:{port}/"] == "200 secret of 127.0.0.1", seen
        assert flips == [FLIP_NAME]  # asked once
        assert victim.connections == 0 and target.connections == 1
        seen, _, _ = run_job(config, api, tmp_path, "jegress-flip2", probe(port, fetches=[f"http://{FLIP_NAME}:{port}/"]),
                             policy=policy)
        assert seen["fetch"][f"http://{FLIP_NAME}:{port}/"].startswith(
            f"403 egress refused: {FLIP_NAME} resolves to 127.0.0.2: loopback"), seen
        assert victim.connections == 0
    finally:
        victim.shutdown()
        victim.server_close()


def test_a_job_without_egress_gets_no_proxy_at_all(tmp_path, api, target):
    port = target.server_address[1]
    config = agent_config(tmp_path, allow_egress=True)  # allowed by the provider, not asked for by the job
    seen, lines, report = run_job(config, api, tmp_path, "jnoegress", probe(
        port, connects=[f"127.0.0.1:{port}"], directs=[("127.0.0.1", egress.PROXY_PORT), ("192.0.2.1", 443)]),
        network=None)
    assert seen["proxy_env"] is None and seen["egress_folder"] is False
    assert seen["connect"][f"127.0.0.1:{port}"] == "error ConnectionRefusedError"  # nothing listens on 3128
    assert seen["direct"] == {f"127.0.0.1:{egress.PROXY_PORT}": "ConnectionRefusedError", "192.0.2.1:443": "OSError"}
    assert target.connections == 0
    assert not any(line.startswith("[depu] egress") for line in lines), lines
    assert any(line.endswith(", no network") for line in lines), lines


def test_an_egress_job_on_a_provider_that_does_not_allow_it_is_handed_back_without_running(tmp_path, api):
    config = agent_config(tmp_path)  # allow_egress defaults to False
    job = {"job_id": "jegress-refused", "workload": "job", "time_limit_s": 60, "attempt": 1,
           "params": {"command": "touch outputs/ran", "network": "egress"}}
    report = JobRun(job, gpus.discover()[0], config, api, Outbox(tmp_path / "outbox", api)).run()
    assert report.action == "fail" and report.body["retryable"] is True
    assert report.body["error"] == "this provider does not allow egress"


def test_egress_bounds_cut_connections_over_the_byte_budget_and_the_connection_cap(tmp_path, api):
    """A budget of a few KiB: the download is cut once it is used up; more connections than the cap at once
    are answered 503."""
    big = serve(type("Big", (Target,), {"do_GET": lambda self: (
        self.send_response(200), self.send_header("Content-Length", str(1 << 20)), self.end_headers(),
        self.wfile.write(b"x" * (1 << 20)))}))
    try:
        port = big.server_address[1]
        policy = egress.EgressPolicy(ports=frozenset({port}), max_bytes=64 * 1024, max_connections=2,
                                     treat_as_public=frozenset({ipaddress.ip_address("127.0.0.1")}))
        source = f"""
            import json, select, socket
            seen = {{}}
            held = [socket.create_connection(("127.0.0.1", 3128), timeout=10) for _ in range(3)]
            answered, _, _ = select.select(held, [], [], 3)   # the cap's refusal comes at once; the others wait
            seen["answered"] = [sock.recv(200).decode(errors="replace").split("\\r\\n")[0] for sock in answered]
            open_one = next(sock for sock in held if sock not in answered)
            open_one.sendall(b"GET http://127.0.0.1:{port}/ HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
            got = 0
            while True:
                data = open_one.recv(65536)
                if not data:
                    break
                got += len(data)
            seen["downloaded"] = got
            for sock in held:
                sock.close()
            with socket.create_connection(("127.0.0.1", 3128), timeout=10) as late:
                seen["after_budget"] = late.recv(300).decode(errors="replace").split("\\r\\n")[0]
            open("outputs/seen.json", "w").write(json.dumps(seen))
        """
        seen, lines, _ = run_job(agent_config(tmp_path, allow_egress=True), api, tmp_path, "jegress-bounds", source,
                                 policy=policy)
        assert seen["answered"] == ["HTTP/1.1 503 Service Unavailable"], seen
        assert 0 < seen["downloaded"] < 200 * 1024, seen  # of 1 MiB: cut at the 64 KiB budget
        assert seen["after_budget"] == "HTTP/1.1 503 Service Unavailable", seen
        assert "[depu] egress refused a connection: 2 already open" in lines, lines
        assert any(line.startswith("[depu] egress stopped: this job's budget") for line in lines), lines
    finally:
        big.shutdown()
        big.server_close()


# ---------------------------------------------------------------- the policy's edges (no sandbox needed)
def test_the_public_stand_in_cannot_come_from_the_agents_settings(tmp_path):
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"allow_egress": True, "egress_treat_as_public": ["127.0.0.1"]}))
    with pytest.raises(ConfigError, match="unknown setting 'egress_treat_as_public'"):
        load_config(path, environ={})
    config = load_config(None, environ={"DEPU_AGENT_ALLOW_EGRESS": "1", "DEPU_AGENT_TREAT_AS_PUBLIC": "127.0.0.1"})
    assert egress.policy_for(config).treat_as_public == frozenset()
    assert egress.policy_for(config).ports == frozenset({80, 443})


def test_the_agent_tells_the_cloud_its_egress_policy(tmp_path):
    assert daemon.egress_offered(agent_config(tmp_path)) == "none"
    assert daemon.egress_offered(agent_config(tmp_path, allow_egress=True)) == "allowed"


class RecordingApi:
    """Answers every call and keeps the bodies the agent sent."""

    has_token = True

    def __init__(self):
        self.bodies: list[tuple[str, dict]] = []

    def post(self, path, body, **_):
        self.bodies.append((path, body))
        return 200, {"cancel": []}


@pytest.mark.parametrize("hosts, sent", [(None, []), (["*.Hub.test", "index.test"], ["*.hub.test", "index.test"])])
def test_each_heartbeat_tells_the_cloud_the_providers_host_list(tmp_path, hosts, sent):
    settings = {"allow_egress": True, **({"egress_hosts": hosts} if hosts else {})}
    recording = RecordingApi()
    daemon.Agent(agent_config(tmp_path, **settings), api=recording, fault=None).heartbeat()
    [(path, body)] = recording.bodies
    assert path == "/agent/heartbeat" and body["egress"] == "allowed" and body["egress_hosts"] == sent
