#!/usr/bin/env bash
# DePU provider agent installer: unattended, idempotent, reversible.
#
#   export DEPU_PROVIDER_TOKEN=T   # from /provider; the environment keeps it out of `ps`, unlike --token
#   sudo --preserve-env=DEPU_PROVIDER_TOKEN ./install.sh --api https://api.depu.example --signing-key KEY [--name rig-1] [--gpus 0,1]
#   sudo ./install.sh --uninstall
#   ./install.sh --dry-run --token T --api URL     # print the steps, change nothing
#
# /provider shows one line that downloads this script and its signature, verifies them with openssl against
# the operator's public key written in that line, and only then runs it with --signing-key set to that key.
#
# What it does: creates a service user (depu-agent) and a sandbox user (depu-sandbox) for renters' scripts,
# a virtual environment in /opt/depu-agent with a CUDA build of torch and the agent, registers this machine
# with the provider token (which runs the GPU verification benchmark), and installs and starts the systemd
# unit depu-agent.service (Restart=always). The agent token it receives is kept in
# /var/lib/depu-agent/agent_token, mode 600, readable by the service user only.
#
# Run from a checkout it installs the agent next to it; without a checkout next to it, it downloads the agent
# package from the API (--api URL/agent/package.b64: base64 of a tarball), checks its SHA-256 against the
# X-Depu-Package-Sha256 header of that same answer (a torn download: try again), then its Ed25519 signature
# (X-Depu-Package-Signature) with openssl against --signing-key, and unpacks and installs it only if that
# signature is the operator's. The checksum comes from the same server as the package, so it proves nothing;
# the signature is what is trusted.
#
# Only https is used, except to a loopback address (127.x.x.x, localhost, [::1]: the local stack and tests).
#
# The provider token never appears in a command line (other users could read it from ps): it travels in the
# environment of the one register command and is not stored.
#
# Options (or environment variables):
#   --token T            provider token from /provider in Telegram (DEPU_PROVIDER_TOKEN)
#   --api URL            DePU API base URL (DEPU_API_URL)
#   --name NAME          machine name shown to you in Telegram (default: hostname)
#   --gpus LIST          GPU indices to share, e.g. 0,1 (default: all)
#   --capabilities LIST  e.g. gpu,fork_host (default: gpu)
#   --prefix DIR         install directory (default: /opt/depu-agent)
#   --signing-key KEY    the operator's Ed25519 public key, as /provider's command gives it (MCowBQYDK2VwAyEA...;
#                        DEPU_AGENT_SIGNING_KEY): the downloaded package must carry its signature
#   --source PATH        agent package to install: a wheel/sdist path or https URL (default: this script's
#                        directory when it holds the agent, else the package downloaded from --api)
#   --fetch-only DIR     download, verify and extract the package into DIR, print its path, and stop
#   --torch-spec SPEC    pip requirement for torch (default: torch; on Linux x86_64 that build includes CUDA)
#   --torch-index-url U  extra pip index for a specific CUDA build of torch (DEPU_TORCH_INDEX_URL)
#   --python PATH        Python 3.10+ to build the venv from (default: python3)
#   --no-start           install and register but do not start the service
#   --dry-run            print every step instead of running it
#   --uninstall          stop and remove the service, users and files
# (end of help)
set -euo pipefail

SERVICE=depu-agent
SERVICE_USER=depu-agent
SANDBOX_USER=depu-sandbox
PREFIX=/opt/depu-agent
CONFIG_DIR=/etc/depu-agent
STATE_DIR=/var/lib/depu-agent
UNIT_FILE=/etc/systemd/system/${SERVICE}.service
# each GPU slot's script runs as uid SANDBOX_UID_BASE + slot: outside the ranges distributions and systemd
# hand out (system/login users, DynamicUser 61184-65519, container ranges from 524288)
SANDBOX_UID_BASE=470000
# the script's own directory; empty when piped into bash (no file, so no checkout next to it)
SCRIPT="${BASH_SOURCE[0]:-}"
HERE=""
if [[ -n "$SCRIPT" && -f "$SCRIPT" ]]; then HERE="$(cd "$(dirname "$SCRIPT")" && pwd)"; fi

TOKEN="${DEPU_PROVIDER_TOKEN:-}"
API_URL="${DEPU_API_URL:-}"
SIGNING_KEY="${DEPU_AGENT_SIGNING_KEY:-}"
NAME="$(hostname)"
GPUS=all
CAPABILITIES=gpu
SOURCE=""
FETCH_ONLY=""
TORCH_SPEC=torch
TORCH_INDEX_URL="${DEPU_TORCH_INDEX_URL:-}"
PYTHON=python3
DRY_RUN=0
UNINSTALL=0
START=1

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }
# run CMD...: execute, or print it under --dry-run
run() {
    if [[ $DRY_RUN == 1 ]]; then printf '+ %s\n' "$*"; else "$@"; fi
}
# write_file PATH MODE: stdin to PATH with MODE (printed under --dry-run)
write_file() {
    local path=$1 mode=$2
    if [[ $DRY_RUN == 1 ]]; then
        printf '+ write %s (mode %s):\n' "$path" "$mode"; sed 's/^/    /'
    else
        install -m "$mode" /dev/null "$path"; cat > "$path"
    fi
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --token) TOKEN=${2:?--token needs a value}; shift 2 ;;
        --api) API_URL=${2:?--api needs a value}; shift 2 ;;
        --signing-key) SIGNING_KEY=${2:?--signing-key needs a value}; shift 2 ;;
        --name) NAME=${2:?}; shift 2 ;;
        --gpus) GPUS=${2:?}; shift 2 ;;
        --capabilities) CAPABILITIES=${2:?}; shift 2 ;;
        --prefix) PREFIX=${2:?}; shift 2 ;;
        --source) SOURCE=${2:?}; shift 2 ;;
        --fetch-only) FETCH_ONLY=${2:?--fetch-only needs a directory}; shift 2 ;;
        --torch-spec) TORCH_SPEC=${2:?}; shift 2 ;;
        --torch-index-url) TORCH_INDEX_URL=${2:?}; shift 2 ;;
        --python) PYTHON=${2:?}; shift 2 ;;
        --no-start) START=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help)
            if [[ -n "$SCRIPT" ]]; then sed -n '2,/^# (end of help)/p' "$SCRIPT" | sed '$d'
            else echo "usage: bash -s -- --token T --api URL [options]; save the script and run it with --help for all"
            fi
            exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

VENV="$PREFIX/venv"
CONFIG_FILE="$CONFIG_DIR/agent.json"

# loopback URL: plain http is accepted only to this machine itself (the local stack and tests), where nothing
# crosses a network; everywhere else a man in the middle could read the token traffic and the agent's config
LOOPBACK_HTTP='^http://(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|localhost|\[::1\])(:[0-9]{1,5})?(/|$)'
is_loopback_http() { [[ "$1" =~ $LOOPBACK_HTTP ]]; }

check_api_url() {
    [[ -n "$API_URL" ]] || die "--api is required"
    [[ "$API_URL" =~ ^https?://[][A-Za-z0-9.:/_-]+$ ]] || die "--api must be an http(s) URL"
    if [[ "$API_URL" != https://* ]] && ! is_loopback_http "$API_URL"; then
        die "--api must be https (plain http only to a loopback address, for the local stack)"
    fi
    API_URL="${API_URL%/}"
}

# curl_proto URL: the only protocol curl may use for URL, redirects included
curl_proto() { if is_loopback_http "$1"; then echo '=http'; else echo '=https'; fi; }

check_signing_key() {
    [[ -n "$SIGNING_KEY" ]] || die "--signing-key is required to download the agent package (it is in the command /provider shows)"
    [[ "$SIGNING_KEY" =~ ^MCowBQYDK2VwAyEA[A-Za-z0-9+/]{43}=$ ]] || die "--signing-key is not an Ed25519 public key (MCowBQYDK2VwAyEA...)"
}

# verify_signature FILE SIGNATURE_B64 DIR: FILE's bytes were signed by the pinned key (openssl 3: pkeyutl -rawin)
verify_signature() {
    local file=$1 signature=$2 dir=$3
    printf '%s\n' '-----BEGIN PUBLIC KEY-----' "$SIGNING_KEY" '-----END PUBLIC KEY-----' > "$dir/signing-key.pem"
    printf '%s' "$signature" | base64 -d > "$dir/signature" 2>/dev/null || return 1
    openssl pkeyutl -verify -pubin -inkey "$dir/signing-key.pem" -rawin -in "$file" -sigfile "$dir/signature" \
        >/dev/null 2>&1
}

# header NAME FILE: the value of response header NAME (lower case) in the curl -D dump FILE
header() { tr -d '\r' < "$2" | awk -F': *' -v name="$1" 'tolower($1) == name {v = $2} END {print v}'; }

# discard_download DIR: nothing of a package that failed its checks stays behind
discard_download() {
    rm -f "$1/package.b64" "$1/package.tar.gz" "$1/package.headers" "$1/signature" "$1/signing-key.pem"
}

# fetch_package DIR: download $API_URL/agent/package.b64 into DIR; check the tarball's SHA-256 against the
# X-Depu-Package-Sha256 header and its Ed25519 signature (X-Depu-Package-Signature, the same answer, so a
# publish in between cannot mix two versions) against the pinned --signing-key; only then extract it. The
# agent's source is then DIR/depu-agent. Nothing of a package that fails is unpacked.
fetch_package() {
    local dir=$1 expected actual signature tool
    for tool in curl base64 sha256sum tar openssl; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found (needed to download and verify the agent package)"
    done
    check_signing_key
    mkdir -p "$dir"
    rm -rf "$dir/depu-agent"
    curl -fsSL --retry 3 --proto "$(curl_proto "$API_URL")" -D "$dir/package.headers" -o "$dir/package.b64" \
        "$API_URL/agent/package.b64" || die "could not download $API_URL/agent/package.b64"
    expected="$(header x-depu-package-sha256 "$dir/package.headers")"
    signature="$(header x-depu-package-signature "$dir/package.headers")"
    [[ "$expected" =~ ^[0-9a-f]{64}$ ]] || die "the API announced no package checksum (X-Depu-Package-Sha256)"
    base64 -d "$dir/package.b64" > "$dir/package.tar.gz" || die "the downloaded package is not base64"
    actual="$(sha256sum "$dir/package.tar.gz" | awk '{print $1}')"
    if [[ "$actual" != "$expected" ]]; then
        discard_download "$dir"
        die "package checksum mismatch (got $actual, announced $expected): try again"
    fi
    if [[ ! "$signature" =~ ^[A-Za-z0-9+/]{86}==$ ]]; then
        discard_download "$dir"
        die "the agent package is not signed (no X-Depu-Package-Signature): refusing to install it"
    fi
    if ! verify_signature "$dir/package.tar.gz" "$signature" "$dir"; then
        discard_download "$dir"
        die "the agent package's signature is not the operator's (not made by the pinned --signing-key): refusing to install it"
    fi
    tar -xzf "$dir/package.tar.gz" -C "$dir" --no-same-owner --no-same-permissions depu-agent \
        || die "could not extract the agent package"
    [[ -f "$dir/depu-agent/pyproject.toml" ]] || die "the agent package has no pyproject.toml"
    discard_download "$dir"
}

if [[ -n "$FETCH_ONLY" ]]; then  # no root, no token: only the download (and a look at what it holds)
    check_api_url
    fetch_package "$FETCH_ONLY"
    echo "$FETCH_ONLY/depu-agent"
    exit 0
fi

if [[ $DRY_RUN == 0 && $(id -u) != 0 ]]; then
    die "run as root (sudo), or use --dry-run to see the steps"
fi

uninstall() {
    say "stopping and removing $SERVICE"
    if command -v systemctl >/dev/null 2>&1; then
        run systemctl disable --now "$SERVICE" || true
    fi
    run rm -f "$UNIT_FILE"
    if command -v systemctl >/dev/null 2>&1; then run systemctl daemon-reload || true; fi
    run rm -rf "$PREFIX" "$CONFIG_DIR" "$STATE_DIR"
    for user in "$SERVICE_USER" "$SANDBOX_USER"; do
        if id "$user" >/dev/null 2>&1 || [[ $DRY_RUN == 1 ]]; then run userdel "$user" || true; fi
    done
    say "removed"
}

if [[ $UNINSTALL == 1 ]]; then
    uninstall
    exit 0
fi

[[ -n "$TOKEN" ]] || die "--token is required (get one with /provider in Telegram)"
check_api_url
[[ "$CAPABILITIES" =~ ^[a-z_]+(,[a-z_]+)*$ ]] || die "--capabilities is a list like gpu,fork_host"
[[ "$NAME" =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "--name may use letters, digits, . _ - (at most 64)"
[[ "$GPUS" =~ ^(all|[0-9]+(,[0-9]+)*)$ ]] || die "--gpus is 'all' or a list like 0,1"
if [[ "$SOURCE" == http://* ]] && ! is_loopback_http "$SOURCE"; then die "--source must be a path or an https URL"; fi
if [[ "$TORCH_INDEX_URL" == http://* ]] && ! is_loopback_http "$TORCH_INDEX_URL"; then
    die "--torch-index-url must be https"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python 3.10+ or pass --python"

if [[ -z "$SOURCE" && -n "$HERE" && -f "$HERE/pyproject.toml" ]]; then
    SOURCE="$HERE"  # run from a checkout: install the agent next to this script
elif [[ -z "$SOURCE" ]]; then  # piped into bash: the package comes from the API
    say "agent package from $API_URL/agent/package.b64 (signature checked against --signing-key)"
    check_signing_key
    if [[ $DRY_RUN == 1 ]]; then
        printf '+ fetch %s/agent/package.b64 into a temporary directory, verify its SHA-256 and its signature by %s, extract\n' \
            "$API_URL" "$SIGNING_KEY"
        SOURCE="<temporary directory>/depu-agent"
    else
        FETCH_DIR="$(mktemp -d)"
        trap 'rm -rf "$FETCH_DIR"' EXIT
        fetch_package "$FETCH_DIR"
        SOURCE="$FETCH_DIR/depu-agent"
    fi
fi

say "users: $SERVICE_USER (runs the agent), $SANDBOX_USER (runs renters' scripts)"
for user in "$SERVICE_USER" "$SANDBOX_USER"; do
    if ! id "$user" >/dev/null 2>&1; then
        run useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
    fi
done
if getent group video >/dev/null 2>&1; then run usermod -aG video "$SERVICE_USER"; fi

say "bubblewrap: each renter's script runs in namespaces of its own (no network, no host processes or files)"
if [[ $DRY_RUN == 1 ]] || ! command -v bwrap >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        run apt-get install -y -q bubblewrap || { run apt-get update -q && run apt-get install -y -q bubblewrap; } \
            || die "could not install bubblewrap (apt-get install bubblewrap)"
    elif command -v dnf >/dev/null 2>&1; then
        run dnf install -y -q bubblewrap || die "could not install bubblewrap (dnf install bubblewrap)"
    else
        die "bubblewrap (bwrap) is not installed and neither apt-get nor dnf is here: install it, then run this again"
    fi
fi
if command -v docker >/dev/null 2>&1 && getent group docker >/dev/null 2>&1; then
    # Docker mode (the agent's default when \`docker info\` works) needs the daemon's socket
    run usermod -aG docker "$SERVICE_USER"
fi

say "virtual environment in $VENV"
run mkdir -p "$PREFIX"
run chmod 755 "$PREFIX"
run "$PYTHON" -m venv "$VENV"
run "$VENV/bin/pip" install --quiet --upgrade pip
if [[ -n "$TORCH_INDEX_URL" ]]; then
    run "$VENV/bin/pip" install --quiet "$TORCH_SPEC" --extra-index-url "$TORCH_INDEX_URL"
else
    run "$VENV/bin/pip" install --quiet "$TORCH_SPEC"
fi
run "$VENV/bin/pip" install --quiet "$SOURCE"
run chmod -R a+rX "$PREFIX"  # the sandbox user runs the venv's Python too

say "configuration in $CONFIG_FILE, state in $STATE_DIR"
run mkdir -p "$CONFIG_DIR" "$STATE_DIR/work"
write_file "$CONFIG_FILE" 600 <<JSON
{
  "api_url": "$API_URL",
  "name": "$NAME",
  "gpus": "$GPUS",
  "capabilities": ["${CAPABILITIES//,/\", \"}"],
  "agent_token_file": "$STATE_DIR/agent_token",
  "work_dir": "$STATE_DIR/work",
  "sandbox_user": "$SANDBOX_USER",
  "sandbox_uid_base": $SANDBOX_UID_BASE,
  "sandbox_python": "$VENV/bin/python"
}
JSON
run chown -R "$SERVICE_USER:$SERVICE_USER" "$CONFIG_DIR" "$STATE_DIR"
run chmod 700 "$CONFIG_DIR" "$STATE_DIR"

say "registering this machine (runs the GPU verification benchmark)"
if [[ $DRY_RUN == 1 ]]; then
    printf '+ DEPU_PROVIDER_TOKEN=*** runuser -u %s -- %s register --config %s\n' \
        "$SERVICE_USER" "$VENV/bin/depu-agent" "$CONFIG_FILE"
else
    # runuser without --login keeps the environment, so the token never enters an argv
    DEPU_PROVIDER_TOKEN="$TOKEN" runuser -u "$SERVICE_USER" -- \
        "$VENV/bin/depu-agent" register --config "$CONFIG_FILE" \
        || die "registration failed: check the token (they are single-use) and --api"
fi
unset TOKEN DEPU_PROVIDER_TOKEN

say "systemd unit $UNIT_FILE"
write_file "$UNIT_FILE" 644 <<UNIT
[Unit]
Description=DePU provider agent (shares this machine's GPUs)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=$SERVICE_USER
Group=$SERVICE_USER
ExecStart=$VENV/bin/depu-agent run --config $CONFIG_FILE
Restart=always
RestartSec=5
# SIGTERM: the agent stops its jobs and hands them back; give it time for the grace period and the flush
KillSignal=SIGTERM
# mixed: SIGTERM reaches the agent alone (it stops its jobs in order); anything left gets SIGKILL at the end
KillMode=mixed
TimeoutStopSec=60
# only to run renters' scripts as their slot's uid, stop them, and make, read and remove their workspaces
# (owned by that uid, mode 700); the scripts themselves get none (bubblewrap, no-new-privileges)
AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER
CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_KILL CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER
ProtectSystem=full
ProtectHome=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
UNIT

run systemctl daemon-reload
if [[ $START == 1 ]]; then
    run systemctl enable --now "$SERVICE"
    say "started: systemctl status $SERVICE; logs: journalctl -u $SERVICE -f"
else
    run systemctl enable "$SERVICE"
    say "installed; start with: systemctl start $SERVICE"
fi
