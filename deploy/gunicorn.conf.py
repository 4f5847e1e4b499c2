"""gunicorn for the backend's web tier: `gunicorn -c deploy/gunicorn.conf.py` (make run-prod,
the Docker image, docker-compose and deploy/stack.sh use it).

Workers and threads (WEB_CONCURRENCY, RPSAM2_WEB_THREADS):
- RQ mode (REDIS_URL set): the web process only parses JSON and waits on Redis; defaults 2
  workers x 8 threads.  Scale workers with cores; threads bound the clicks waiting at once.
- inline mode (no Redis): SAM2 lives in the web process, one copy per worker; default 1 worker
  x 4 threads (the threads wait on one model).  More workers only multiply the model's memory.
No --preload: the app factory runs in each worker after the fork (torch and CUDA must not be
initialised before it, and each worker opens its own Redis connections).
"""

import logging
import os

_inline = not os.environ.get("REDIS_URL")

wsgi_app = "rpsam2_backend.web.app:create_app_from_env()"
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '9090')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "1" if _inline else "2"))
threads = int(os.environ.get("RPSAM2_WEB_THREADS", "4" if _inline else "8"))
preload_app = False
# gthread workers heartbeat while requests run: this catches a frozen worker, it is no request
# timeout (RPSAM2_PREDICT_TIMEOUT bounds a click).  The first inline encode on a CPU takes ~20 s.
timeout = 120
# SIGTERM: stop accepting, let running clicks finish (a first encode included), then exit.
graceful_timeout = int(os.environ.get("RPSAM2_GRACEFUL_TIMEOUT", "60"))
keepalive = 30  # Label Studio reuses its connection for the clicks of a session
limit_request_line = 8190
limit_request_field_size = 8190
control_socket_disable = True

accesslog = "-"
# The path without its query string (signed URLs and tokens stay out of the log), and the
# request id the app answers with, which also names the server-side log lines of an error.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def post_worker_init(worker) -> None:
    logging.basicConfig(
        level=loglevel.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] [%(name)s] %(message)s"
    )
