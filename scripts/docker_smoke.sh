#!/usr/bin/env bash
# Smoke test of the Docker image on a machine with no Docker engine and no Docker Hub (run by .ci/run):
#   bash scripts/docker_smoke.sh            # as root, from anywhere; 4 to 7 minutes on 2 shared cores
# 1. installs buildah and debootstrap with apt (when missing);
# 2. makes a stand-in for python:3.11-slim: Debian bookworm (minbase) + python3, pip, `python` on the PATH,
#    the EXTERNALLY-MANAGED marker removed, committed as a local image;
# 3. builds the project's Dockerfile FROM it with buildah (chroot isolation, vfs storage), torch from the
#    machine's staged CPU wheel when pip has one (PIP_FIND_LINKS / pip config), else the Dockerfile's default;
# 4. runs the image's own CMD as the image's own USER (`buildah run`, which shares the host's loopback;
#    `podman run` cannot set rlimits in these sandboxes), on a free loopback port, and waits for /readyz;
# 5. fits a trajectory through POST /v1/fit and a CSV through POST /v1/fit/csv, parses every returned rhs
#    with SymPy, and checks that the weights served are the package's copy in site-packages (same bytes
#    as checkpoints/default) and that nothing of the build context is left in the image;
# 6. stops the server by its PID and removes the container, the images and every file it made.
# Everything lives in its own buildah store under $WORK, so a run never touches other images, and a
# run after a failed or killed one starts clean. Every wait is bounded. Exit 0 means all checks passed.
# Settings (environment): ODEFORMER_SMOKE_WORK (default /var/tmp/odeformer-docker-smoke),
# ODEFORMER_SMOKE_WHEELS (a folder holding a torch-*+cpu-cp311 wheel; default: pip's find-links),
# DEBIAN_MIRROR (default http://deb.debian.org/debian), ODEFORMER_SMOKE_KEEP=1 (keep store and logs).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=${ODEFORMER_SMOKE_WORK:-/var/tmp/odeformer-docker-smoke}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=localhost/odeformer-smoke-base:bookworm
IMAGE=localhost/odeformer-smoke:latest
T0=$SECONDS
exec 8>&1 9>&2  # the script's own stdout/stderr, for the cleanup: a TERM can come while a command's log is open

say() { echo "[docker-smoke $(( SECONDS - T0 ))s] $*"; }
die() { echo "[docker-smoke] FAILED: $*" >&2; exit 1; }
CHILD=""
bounded() {  # bounded SECONDS CMD...: `timeout`, waited for in the background so that a TERM to this
    # script (e.g. .ci/run's outer timeout) runs the cleanup at once and reaches the command too
    timeout "$@" &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and buildah's chroot isolation need it)"

# --- 1. tools -------------------------------------------------------------------------------------
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing buildah and debootstrap with apt"
    apt_install() {
        bounded 300 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o DPkg::Lock::Timeout=120 buildah debootstrap >/dev/null
    }
    apt_install || { bounded 300 apt-get update -qq && apt_install; } \
        || die "apt-get install buildah debootstrap failed"
fi
B=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)

# --- cleanup: also what a failed or killed earlier run left ---------------------------------------
SERVER_PID=""; RUN_PID=""; CTR=""
umount_under() {  # lazily unmount whatever is still mounted below $1 (debootstrap's /proc, buildah's binds)
    local m
    while read -r m; do umount -l "$m" 2>/dev/null || true; done \
        < <(awk -v w="$1" 'index($5, w "/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    exec 1>&8 2>&9
    # a bounded command still running (the script was interrupted): TERM its timeout, which passes it on
    # to the command's process group; buildah then removes its build container, which takes a while
    if [ -n "$CHILD" ]; then
        kill -TERM "$CHILD" 2>/dev/null || true
        timeout 150 tail --pid="$CHILD" -f /dev/null 2>/dev/null || kill -KILL "$CHILD" 2>/dev/null || true
    fi
    for p in $SERVER_PID $RUN_PID; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $SERVER_PID $RUN_PID; do timeout 20 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
    if [ "$rc" != 0 ] && [ -s "$WORK/server.log" ]; then
        echo "[docker-smoke] last lines of the server's log:" >&2; tail -n 40 "$WORK/server.log" >&2
    fi
    if [ "${ODEFORMER_SMOKE_KEEP:-0}" = 1 ]; then say "kept $WORK (ODEFORMER_SMOKE_KEEP=1)"; exit "$rc"; fi
    if [ -d "$WORK/storage" ]; then
        timeout 120 "${B[@]}" rm --all >/dev/null 2>&1 || true
        timeout 120 "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
    fi
    umount_under "$WORK"
    rm -rf --one-file-system "$WORK" 2>/dev/null || true
    if [ -e "$WORK" ]; then echo "[docker-smoke] warning: could not remove all of $WORK" >&2; fi
    say "cleaned up; exit $rc"
    exit "$rc"
}
umount_under "$WORK"
if [ -d "$WORK/storage" ]; then
    say "removing what an earlier run left in $WORK"
    timeout 120 "${B[@]}" rm --all >/dev/null 2>&1 || true
    timeout 120 "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
fi
rm -rf --one-file-system "$WORK"
[ ! -e "$WORK" ] || die "cannot remove $WORK left by an earlier run"
mkdir -p "$WORK"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "[docker-smoke] FAILED: line $LINENO: $BASH_COMMAND" >&2' ERR  # whatever has no message of its own

# --- 2. the stand-in base image -------------------------------------------------------------------
say "debootstrap bookworm (minbase + python3, pip) from $MIRROR"
bounded 420 debootstrap --variant=minbase \
    --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
    bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed or took over 7 minutes (log above)"; }
umount_under "$WORK/rootfs"
rm -f "$WORK"/rootfs/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
chroot "$WORK/rootfs" python --version >/dev/null 2>&1 || die "the stand-in base has no working 'python'"
say "committing the stand-in base as $BASE_IMAGE"
base_ctr=$(timeout 60 "${B[@]}" from scratch) || die "buildah from scratch failed"
base_mnt=$(timeout 60 "${B[@]}" mount "$base_ctr") || die "buildah mount failed"
timeout 300 tar -C "$WORK/rootfs" -cf - . | timeout 300 tar -C "$base_mnt" -xf - \
    || die "could not copy the stand-in's root file system into its container within 5 minutes"
timeout 60 "${B[@]}" umount "$base_ctr" >/dev/null
timeout 60 "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python "$base_ctr"
timeout 300 "${B[@]}" commit --quiet --rm "$base_ctr" "$BASE_IMAGE" >/dev/null \
    || die "could not commit the stand-in base within 5 minutes"
rm -rf --one-file-system "$WORK/rootfs"

# --- 3. build the project's Dockerfile ------------------------------------------------------------
BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
VOLUMES=(-v /etc/ssl/certs:/etc/ssl/certs:ro)  # the machine's CA certificates, for pip inside the build
wheel=""
find_links=${ODEFORMER_SMOKE_WHEELS:-${PIP_FIND_LINKS:-}}
if [ -z "$find_links" ] && [ -x "$REPO/.venv/bin/pip" ]; then
    find_links=$("$REPO/.venv/bin/pip" config get global.find-links 2>/dev/null || true)
fi
for d in $find_links; do
    d=${d#file://}
    for f in "$d"/torch-*cp311*manylinux*x86_64.whl; do
        [ -f "$f" ] && case "$f" in *+cpu-*|*%2Bcpu-*) wheel=$f; break 2 ;; esac
    done
done
if [ -n "$wheel" ]; then
    version=$(basename "$wheel"); version=${version#torch-}; version=${version%%-*}; version=${version//%2B/+}
    say "torch from the staged wheel $wheel (torch==$version), its dependencies from ${PIP_INDEX_URL:-PyPI}"
    VOLUMES+=(-v "$(dirname "$wheel"):/wheels:ro")
    BUILD_ARGS+=(--build-arg "TORCH_FIND_LINKS=/wheels" --build-arg "TORCH_SPEC=torch==$version"
                 --build-arg "TORCH_INDEX_URL=${PIP_INDEX_URL:-https://pypi.org/simple}")
else
    say "no staged torch CPU wheel found (PIP_FIND_LINKS, pip config): torch from the Dockerfile's default index"
fi
say "buildah bud (log: $WORK/build.log)"
bounded 600 "${B[@]}" bud --isolation chroot --format docker --pull=false --layers=false \
    "${VOLUMES[@]}" "${BUILD_ARGS[@]}" -t "$IMAGE" -f "$REPO/Dockerfile" "$REPO" >"$WORK/build.log" 2>&1 \
    || { tail -n 30 "$WORK/build.log" >&2; die "buildah bud failed or took over 10 minutes (log above)"; }
size=$(timeout 60 "${B[@]}" images --format '{{.Size}}' "$IMAGE" 2>/dev/null || echo "?")
say "built $IMAGE ($size)"

# --- 4. the image's own CMD, as its own USER ------------------------------------------------------
# the image's config (buildah inspect's JSON): line 1 its USER, then its ENTRYPOINT + CMD, one word a line
mapfile -t CONFIG < <(timeout 60 "${B[@]}" inspect --type image "$IMAGE" | python3 -c '
import json, sys
c = json.load(sys.stdin)["Docker"]["config"]
print(c.get("User") or "")
for word in (c.get("Entrypoint") or []) + (c.get("Cmd") or []):
    print(word)')
user=${CONFIG[0]:-}; CMD=("${CONFIG[@]:1}")
[ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] || die "the image has no non-root USER (got '$user')"
[ "${#CMD[@]}" -gt 0 ] || die "the image has no CMD"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CTR=$(timeout 300 "${B[@]}" from --pull=false --name odeformer-smoke "$IMAGE") \
    || die "buildah from $IMAGE failed or took over 5 minutes"
# argparse keeps the last --host/--port: the CMD runs as written, moved to a free loopback port
say "starting the CMD as user '$user': ${CMD[*]} --host 127.0.0.1 --port $port"
"${B[@]}" run --isolation chroot --user "$user" "$CTR" -- "${CMD[@]}" --host 127.0.0.1 --port "$port" \
    >"$WORK/server.log" 2>&1 &
RUN_PID=$!

server_pid() {  # the server among buildah run's descendants: the process listening with our --port
    local queue=("$RUN_PID") p c
    while [ "${#queue[@]}" -gt 0 ]; do
        p=${queue[0]}; queue=("${queue[@]:1}")
        if [ "$p" != "$RUN_PID" ] && [[ "$(readlink "/proc/$p/exe" 2>/dev/null)" != */buildah ]] \
            && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "--port $port"; then
            echo "$p"; return 0
        fi
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do queue+=("$c"); done
    done
    return 1
}
http_status() {  # status code of GET $1 on the server, with bash's /dev/tcp (no curl needed)
    timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0 && printf "GET $1 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 \
        && head -n 1 <&3' "$port" "$1" 2>/dev/null | awk '{print $2}'
}
deadline=$(( SECONDS + 240 ))
until [ "$(http_status /readyz)" = 200 ]; do
    kill -0 "$RUN_PID" 2>/dev/null || die "the server exited before /readyz answered 200 (log below)"
    [ "$SECONDS" -lt "$deadline" ] || die "/readyz did not answer 200 within 240 s"
    [ -n "$SERVER_PID" ] || SERVER_PID=$(server_pid || true)
    sleep 2
done
[ -n "$SERVER_PID" ] || SERVER_PID=$(server_pid || true)
[ -n "$SERVER_PID" ] || die "/readyz answered but the server's process was not found under buildah run ($RUN_PID)"
server_uid=$(awk '/^Uid:/ {print $2}' "/proc/$SERVER_PID/status")
say "/readyz answered 200 (server PID $SERVER_PID, uid $server_uid)"
[ "$server_uid" != 0 ] || die "the server runs as root"

# --- 5. fits, SymPy, where the weights come from --------------------------------------------------
weights_sha=$(sha256sum "$REPO/checkpoints/default/model.safetensors" | cut -d' ' -f1)
say "fitting through /v1/fit and /v1/fit/csv (client: the image's python, over loopback)"
cat >"$WORK/check.py" <<'EOF'
import hashlib
import json
import math
import os
import sys
import sysconfig
import urllib.request
import uuid
from pathlib import Path

import sympy

import odeformer
from odeformer import checkpoint

URL = f"http://127.0.0.1:{os.environ['PORT']}"


def fail(msg):
    print(f"[docker-smoke] FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def call(path, body=None, content_type="application/json"):
    req = urllib.request.Request(URL + path, data=body, headers={"Content-Type": content_type} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        fail(f"{path}: HTTP {e.code}: {e.read()[:500]!r}")


def check(where, candidates):
    if not candidates:
        fail(f"{where}: no candidates")
    x = sympy.Symbol("x")
    for c in candidates:
        try:
            expr = sympy.parse_expr(c["rhs"]["x"], local_dict={"x": x, "t": sympy.Symbol("t")})
        except Exception as e:
            fail(f"{where}: rhs {c['rhs']!r} does not parse with SymPy: {e}")
        if not expr.free_symbols <= {x, sympy.Symbol("t")}:
            fail(f"{where}: rhs {c['rhs']['x']!r} has unknown symbols {expr.free_symbols}")
    best = candidates[0]
    value = float(sympy.parse_expr(best["rhs"]["x"], local_dict={"x": x}).subs(x, 1.0))
    print(f"[docker-smoke] {where}: dx/dt = {best['rhs']['x']}  (r2 {best['r2']:.4f}, {len(candidates)} candidates)")
    if not (best["r2"] > 0.99 and abs(value + 0.3) < 0.03):
        fail(f"{where}: exponential decay dx/dt = -0.3 x fitted as {best['rhs']['x']} (r2 {best['r2']})")


t = [0.25 * i for i in range(41)]
xs = [math.exp(-0.3 * s) for s in t]
opts = {"beam_size": 8, "top_k": 3, "time_budget_s": 10}
fit = call("/v1/fit", json.dumps({"variables": ["x"], "trajectories": [{"t": t, "x": [[v] for v in xs]}],
                                  "options": opts}).encode())
check("POST /v1/fit", fit["candidates"])

csv = "t,x\n" + "".join(f"{a},{b}\n" for a, b in zip(t, xs))
boundary = uuid.uuid4().hex
body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"decay.csv\"\r\n"
        f"Content-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n").encode()
res = call("/v1/fit/csv?beam_size=8&top_k=3&time_budget_s=10", body, f"multipart/form-data; boundary={boundary}")
if len(res["systems"]) != 1 or res["systems"][0].get("error"):
    fail(f"POST /v1/fit/csv: {res['systems']!r}"[:500])
check("POST /v1/fit/csv", res["systems"][0]["candidates"])

# the weights: the installed package's copy, the same bytes as checkpoints/default, no build context left
model = call("/v1/model")
weights = checkpoint.default_path() / "model.safetensors"
purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
print(f"[docker-smoke] model {model['name']} from {weights}")
if purelib not in weights.resolve().parents:
    fail(f"default checkpoint {weights} is not in the installed package ({purelib})")
if hashlib.sha256(weights.read_bytes()).hexdigest() != os.environ["WEIGHTS_SHA"]:
    fail(f"{weights} differs from the repository's checkpoints/default/model.safetensors")
if fit["model"]["sha256"] != model["sha256"]:
    fail("/v1/fit and /v1/model name different weights")
if Path("/app").exists() and any(Path("/app").iterdir()):
    fail(f"/app still holds the build context: {sorted(p.name for p in Path('/app').iterdir())}")
if purelib not in Path(odeformer.__file__).resolve().parents:
    fail(f"odeformer imported from {odeformer.__file__}, not from {purelib}")
EOF
bounded 300 "${B[@]}" run --isolation chroot --user "$user" -v "$WORK/check.py:/tmp/smoke_check.py:ro" \
    -e "PORT=$port" -e "WEIGHTS_SHA=$weights_sha" "$CTR" -- python /tmp/smoke_check.py \
    || die "checks inside the image failed (see above)"

# --- 6. stop the server by its PID ----------------------------------------------------------------
say "stopping the server (PID $SERVER_PID)"
kill -TERM "$SERVER_PID"
timeout 30 tail --pid="$SERVER_PID" -f /dev/null || die "the server did not stop within 30 s of SIGTERM"
timeout 30 tail --pid="$RUN_PID" -f /dev/null || die "buildah run did not return within 30 s of the server stopping"
SERVER_PID=""; RUN_PID=""
say "passed in $(( SECONDS - T0 )) s; removing the container and images"
