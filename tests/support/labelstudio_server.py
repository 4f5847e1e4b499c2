"""A real Label Studio server (label-studio 1.23.2, own venv) for end-to-end tests.

Protocol facts, label-studio 1.23.2, checked against this server with a recording stub backend
(tests/integration/labelstudio/test_harness.py guards them; source: label_studio/ml/{api_connector,models}.py):

- Calls to the ML backend carry NO Authorization header (only `User-Agent: heartex/<ver>`), unless
  the backend was added with auth_method=BASIC_AUTH (then HTTP Basic on every call). Timeouts:
  connect 1 s; /health 1 s, /setup 3 s, /predict 100 s (ML_TIMEOUT_* env vars).
- GET /health: any 2xx with a JSON body counts as up; {"status": "UP"} is NOT required. Non-2xx or
  no answer -> backend state "Disconnected". LS re-runs /health + /setup on connect (3x), on every
  GET /api/ml/{id} and before every batch predict.
- POST /setup body: {"project": "<project id>.<created_at unix ts>", "schema": <label config,
  stripped>, "hostname": LABEL_STUDIO_HOST or "http://localhost:<port>", "access_token": <legacy API
  token of the project's creator>, "extra_params": null}. Reply {"model_version": "..."}: LS stores
  it as the backend's model_version (auto_update). Non-2xx -> state "Error" with the requests error
  text. The project's own model_version becomes the backend *title* when first connected.
- POST /predict body: {"tasks": [task, ...], "project": "<id>.<ts>", "label_config": ...,
  "params": {"login": null, "password": null, "context": <ctx or null>}}; `context` sits in params.
  * Interactive (POST /api/ml/{id}/interactive-annotating {"task": id, "context": {...}}; the
    editor sends context {"result": [serialized smart regions]} = every dynamic region of the same
    type and label on that image, each keypoint like {"id", "type": "keypointlabels", "from_name",
    "to_name", "origin", "original_width", "original_height", "image_rotation", "is_positive",
    "value": {"x" %, "y" %, "width", "keypointlabels": [label], "labels"}}; read from the bundled
    editor source, not driven from a browser here): one task, expanded with
    "annotations", "predictions", "drafts". LS answers the caller HTTP 200 {"data": results[0]}
    verbatim (the editor uses only data.result; nothing is stored), or HTTP 200 {"errors": [...]}
    holding only the requests error line ("500 Server Error: ... for url: .../predict"): the
    backend's error body never reaches the annotator.
  * Batch (Data Manager "Retrieve predictions" = POST /api/dm/actions?id=retrieve_tasks_predictions,
    and GET /api/tasks/{id}, i.e. the editor opening a task that has no prediction): context null,
    all selected tasks in ONE request, skipping tasks that already have a prediction whose
    model_version equals the /setup model_version.
  * Reply {"results": [{"result": [...], "score": s, "model_version": v}, ...]}, one per task in
    order (a single item for several tasks -> LS retries one task at a time). Stored prediction
    model_version = results[i].model_version, else the /setup model_version; top-level
    "model_version" is ignored; score from results[i].score. If neither gives a model_version,
    opening a task fails with HTTP 400 "model_version may not be null": always send one, and the
    same one as /setup (otherwise every retrieve re-predicts every task).
- Webhooks: creating the ML backend auto-creates a project webhook <ml url>/webhook with
  send_for_all_actions=true, send_payload=true: ANNOTATION_CREATED/UPDATED, TASKS_CREATED, ... all
  arrive, POSTed synchronously inside the LS request with a 1 s timeout (WEBHOOK_TIMEOUT), no
  Authorization, User-Agent python-requests. ANNOTATION_CREATED body: {"action", "annotation":
  {"id", "result", "task", "project", "completed_by", ...}, "task": {"id", "data", ...}, "project":
  {"id", "label_config", ...}}. "Start training" (POST /api/ml/{id}/train) POSTs {"action":
  "START_TRAINING", "project": {...}} to /webhook (User-Agent heartex, 100 s timeout); a reply
  {"job": id} is recorded as a train job. Do not add a second webhook to the same URL.
- Media: an uploaded file lands at /data/upload/<project>/<8 hex>-<name> (task.data[<value key>]);
  fetching it needs `Authorization: Token <token>` (401 otherwise). Local files storage tasks hold
  "<LABEL_STUDIO_HOST>/data/local-files/?d=<path under the document root>" (absolute when
  LABEL_STUDIO_HOST is set), served only inside a connected storage's directory.
- Server quirks: a busy -p port makes LS silently take port+1 (we check); REDIS_ENABLED is off in
  the community build, so webhooks and predictions run in the request thread.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from tests.support.labelstudio_api import LabelStudioAPI
from tests.support.paths import REPO_ROOT

LS_VENV_ENV = "RPSAM2_LS_VENV"
LS_USERNAME = "rpsam2-tests@localhost"
LS_PASSWORD = "rpsam2-tests-password"
# A fixed legacy token: tests and the backend under test can be configured before the server exists.
LS_TOKEN = "rpsam2e2etesttoken0123456789abcdef012345"

# First start runs ~200 migrations on 2 shared cores (~40 s quiet, much more under load).
DEFAULT_START_TIMEOUT_S = 300.0
DEFAULT_STOP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1


class LabelStudioNotInstalled(RuntimeError):
    """The separate Label Studio venv is missing: tests must fail loudly, not skip."""


class LabelStudioStartError(RuntimeError):
    pass


def find_label_studio_executable() -> Path:
    venv = Path(os.environ.get(LS_VENV_ENV) or REPO_ROOT / ".venv-ls")
    executable = venv / "bin" / "label-studio"
    if not executable.is_file():
        raise LabelStudioNotInstalled(
            f"Label Studio server not found at {executable}. Run `make ls-venv` in {REPO_ROOT} "
            f"(or point {LS_VENV_ENV} at a venv with label-studio==1.23.2)."
        )
    return executable


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    # Label Studio silently moves to port+1 when the port is busy (it probes "localhost"), which
    # would make us talk to someone else's server: check both loopback families first.
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((host, port))
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno in (97, 99):  # no IPv6 on this host
                continue
            return False
    return True


class LabelStudioServer:
    """One running Label Studio process with its own data directory, user and token."""

    def __init__(self, process: subprocess.Popen, port: int, data_dir: Path, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.token = LS_TOKEN
        self.username = LS_USERNAME
        self.password = LS_PASSWORD
        self.data_dir = data_dir
        # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: files put here can be served as /data/local-files/?d=<rel>
        self.files_dir = data_dir / "files"
        self.log_path = log_path
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {LS_TOKEN}"
        self.api = LabelStudioAPI(self.url, self.session, diagnostics=self.log_tail)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no Label Studio log at {self.log_path}: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        self.session.close()
        if self.process.poll() is not None:
            return
        # The server runs in its own session: signal the whole group so no child outlives the test.
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=timeout_s)

    def __enter__(self) -> LabelStudioServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def label_studio_env(data_dir: Path, port: int, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base_env is None else base_env)
    # A caller's venv on PATH/PYTHONPATH must not leak into the server's interpreter.
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE"):
        env.pop(key, None)
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=LS_USERNAME,
        LABEL_STUDIO_PASSWORD=LS_PASSWORD,
        LABEL_STUDIO_USER_TOKEN=LS_TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        # Let the server call an ML backend / webhook receiver on loopback.
        ML_BLOCK_LOCAL_IP="false",
        SSRF_PROTECTION_ENABLED="false",
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(data_dir / "files"),
        # /setup then hands the backend an exact, reachable hostname (default: http://localhost:PORT).
        LABEL_STUDIO_HOST=f"http://127.0.0.1:{port}",
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        # Hermetic: no telemetry, error reporting or PyPI version check (no internet in CI).
        LABEL_STUDIO_COLLECT_ANALYTICS="false",
        LABEL_STUDIO_LATEST_VERSION_CHECK="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
    )
    return env


def _die_with_parent() -> None:
    # A pytest run killed by a timeout must not leave a server eating the shared cores. The
    # signal fires when the thread that started the server exits: start it from the main thread.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: stop() still cleans up on a normal exit
        pass


def start_label_studio(
    tmp_dir: str | os.PathLike[str],
    port: int | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    extra_env: Mapping[str, str] | None = None,
) -> LabelStudioServer:
    """Start Label Studio on loopback with its data under tmp_dir; return once the API answers.

    Raises LabelStudioNotInstalled when the venv is missing and LabelStudioStartError (with the
    log tail) when the server dies or does not answer in time.
    """
    executable = find_label_studio_executable()
    data_dir = Path(tmp_dir).resolve()
    (data_dir / "files").mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "label-studio.log"
    if port is None:
        port = free_loopback_port()
    if not _port_is_free(port):
        raise LabelStudioStartError(f"port {port} is already in use")
    env = label_studio_env(data_dir, port)
    if extra_env:
        env.update(extra_env)
    command = [
        str(executable), "start", "--no-browser", "--internal-host", "127.0.0.1",
        "-p", str(port), "--enable-legacy-api-token",
    ]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command, cwd=data_dir, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )
    server = LabelStudioServer(process, port, data_dir, log_path)
    try:
        _wait_until_ready(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: LabelStudioServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not server.is_running():
            code = server.process.returncode
            raise LabelStudioStartError(f"Label Studio exited ({code}) during start:\n{server.log_tail()}")
        try:
            health = requests.get(f"{server.url}/health", timeout=5)
            if health.status_code == 200:
                # /health is anonymous: also prove this is our server and that our token works.
                me = server.session.get(f"{server.url}/api/current-user/whoami", timeout=10)
                if me.status_code == 200 and me.json().get("email") == server.username:
                    _check_port_not_moved(server)
                    return
                last_error = f"whoami -> {me.status_code} {me.text[:200]}"
            else:
                last_error = f"/health -> {health.status_code}"
        except (requests.ConnectionError, requests.Timeout) as exc:
            last_error = type(exc).__name__
        time.sleep(0.5)
    raise LabelStudioStartError(
        f"Label Studio did not become ready on {server.url} within {timeout_s:.0f} s ({last_error}):\n"
        f"{server.log_tail()}"
    )


def _check_port_not_moved(server: LabelStudioServer) -> None:
    if f"Port {server.port} is in use" in server.log_tail(400):
        raise LabelStudioStartError(f"Label Studio moved off port {server.port}:\n{server.log_tail()}")


def copy_into_local_files(server: LabelStudioServer, source: Path, relative_path: str) -> str:
    """Copy a file under the local-files root; return the task URL Label Studio serves it at.

    Label Studio only serves it once a project has a local files storage over its directory
    (server.api.add_local_files_storage).
    """
    target = server.files_dir / relative_path
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return f"/data/local-files/?d={relative_path}"
