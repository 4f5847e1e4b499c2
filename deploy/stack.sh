#!/usr/bin/env bash
# The docker-compose stack without Docker, on one machine: redis-server, a click worker, a
# training worker and the backend (gunicorn, deploy/gunicorn.conf.py), each in its own
# process group with a log and a PID file under the run directory.
#
#   deploy/stack.sh start | stop | status | restart
#
# Settings come from the environment (see deploy/.env.example); ENV_FILE (default deploy/.env,
# if present) is sourced first.  Stack knobs:
#   RUN_DIR=var/stack   PORT=9090   REDIS_PORT=6380   REDIS_URL (default: start our own redis-server)
#   VENV=.venv   START_TIMEOUT=300 (seconds `start` waits for /health and a live click worker)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ENV_FILE=${ENV_FILE:-deploy/.env}
if [ -f "$ENV_FILE" ]; then set -a; . "$ENV_FILE"; set +a; fi

RUN_DIR=${RUN_DIR:-var/stack}
PORT=${PORT:-9090}
REDIS_PORT=${REDIS_PORT:-6380}
VENV=${VENV:-.venv}
START_TIMEOUT=${START_TIMEOUT:-300}
STOP_TIMEOUT=${STOP_TIMEOUT:-70}  # above gunicorn's graceful timeout: running clicks finish
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
# The venv's gunicorn and workers first on PATH.
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
export PATH="$VENV/bin:$PATH"
export MODEL_DIR=${MODEL_DIR:-$RUN_DIR/models}
OWN_REDIS=0
if [ -z "${REDIS_URL:-}" ]; then OWN_REDIS=1; export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"; fi
SERVICES=(redis click-worker train-worker backend)

pid_of() { local f="$RUN_DIR/$1.pid"; [ -f "$f" ] && cat "$f" || true; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

launch() {  # name command...: own session (so stop takes the whole group), log, PID file
  local name=$1; shift
  if running "$name"; then echo "$name: already running (pid $(pid_of "$name"))"; return; fi
  setsid "$@" >>"$RUN_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
  echo "$name: started (pid $!, log $RUN_DIR/$name.log)"
}

health() {  # backend answers, Redis up, a live worker on the click queue and one on the train queue
  python - "$1" "${RPSAM2_CLICK_QUEUE:-rpsam2-click}" "${RPSAM2_TRAIN_QUEUE:-rpsam2-train}" <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as resp:
        body = json.load(resp)
except Exception:
    sys.exit(1)
served = {q for w in body.get("dispatch", {}).get("workers", []) for q in w.get("queues", [])}
sys.exit(0 if body.get("redis") == "up" and set(sys.argv[2:]) <= served else 1)
PY
}

start() {
  [ -x "$VENV/bin/rpsam2-worker" ] || { echo "no $VENV/bin/rpsam2-worker: run \`make venv\`" >&2; exit 1; }
  if [ "$OWN_REDIS" = 1 ]; then
    command -v redis-server >/dev/null || { echo "redis-server missing: run \`make redis\`" >&2; exit 1; }
    launch redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN_DIR" \
      --save "" --appendonly no
  fi
  launch click-worker rpsam2-worker --queues click --name "stack-click-$PORT"
  launch train-worker rpsam2-worker --queues train --name "stack-train-$PORT"
  PORT="$PORT" HOST="${HOST:-0.0.0.0}" launch backend gunicorn -c "$ROOT/deploy/gunicorn.conf.py"
  local deadline=$((SECONDS + START_TIMEOUT))
  until health "http://127.0.0.1:$PORT/health"; do
    for name in "${SERVICES[@]}"; do
      if [ -f "$RUN_DIR/$name.pid" ] && ! running "$name"; then
        echo "$name exited; last log lines:" >&2; tail -n 30 "$RUN_DIR/$name.log" >&2; stop; exit 1
      fi
    done
    if [ $SECONDS -ge $deadline ]; then echo "not ready in ${START_TIMEOUT}s" >&2; stop; exit 1; fi
    sleep 1
  done
  echo "ready: http://127.0.0.1:$PORT (REDIS_URL=$REDIS_URL, logs in $RUN_DIR)"
}

stop_one() {
  local name=$1 pid
  pid=$(pid_of "$name")
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; echo "$name: killed"; fi
    # gunicorn runs its workers as children: wait until the whole group is gone.
    while pgrep -g "$pid" >/dev/null 2>&1 && [ $SECONDS -lt $((deadline + 5)) ]; do sleep 0.2; done
    pkill -KILL -g "$pid" 2>/dev/null || true
    echo "$name: stopped"
  fi
  rm -f "$RUN_DIR/$name.pid"
}

stop() {  # reverse order: the backend first, Redis last (workers withdraw their presence)
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do stop_one "${SERVICES[$i]}"; done
}

status() {
  local rc=0
  for name in "${SERVICES[@]}"; do
    if running "$name"; then echo "$name: running (pid $(pid_of "$name"))"
    elif [ "$name" = redis ] && [ "$OWN_REDIS" = 0 ]; then echo "redis: external ($REDIS_URL)"
    else echo "$name: stopped"; rc=3; fi
  done
  if health "http://127.0.0.1:$PORT/health"; then echo "health: ready"; else echo "health: not ready"; rc=3; fi
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
