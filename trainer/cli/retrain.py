"""``rpsam2-retrain --project ID [--once | --enqueue]``: the learning loop for cron, systemd or a queue.

--once      one retrain now, in this process, then exit (for cron).
--enqueue   put a retrain on the training queue (REDIS_URL) and exit; a worker with
            ``--queues train`` runs it (and, with RPSAM2_RETRAIN_INTERVAL, keeps re-scheduling it).
(neither)   retrain now, then again every --interval seconds (default RPSAM2_RETRAIN_INTERVAL,
            else one hour) until stopped: a systemd service.

Exit status: 0 promoted / refused / skipped, 1 the retrain failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from rpsam2_backend.core.errors import ConfigError
from rpsam2_backend.core.settings import Settings


def _once(settings: Settings, project: str) -> int:
    from trainer.retrain import retrain_job

    try:
        status = retrain_job({"project": project, "reason": "rpsam2-retrain"}, settings=settings)
    except ConfigError as exc:
        print(f"rpsam2-retrain: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"rpsam2-retrain: retrain of project {project} failed: {exc}", file=sys.stderr)
        return 1
    print(f"project {project}: {status['status']}: {status.get('reason', '')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rpsam2-retrain", description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True, help="Label Studio project id")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="retrain once in this process and exit")
    mode.add_argument("--enqueue", action="store_true", help="enqueue on the training queue (needs REDIS_URL)")
    parser.add_argument("--interval", type=float, help="seconds between runs without --once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.project.strip().isdigit():
        print(f"rpsam2-retrain: --project must be a Label Studio project id (a number), got {args.project!r}",
              file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"rpsam2-retrain: {exc}", file=sys.stderr)
        return 2
    project = args.project.strip()
    if not settings.label_studio.url:
        print("rpsam2-retrain: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY so the labels can be read",
              file=sys.stderr)
        return 2
    if args.enqueue:
        if not settings.queue.redis_url:
            print("rpsam2-retrain: --enqueue needs REDIS_URL (or use --once)", file=sys.stderr)
            return 2
        from trainer.retrain import enqueue

        print(enqueue(settings, project, "rpsam2-retrain --enqueue"))
        return 0
    if args.once:
        return _once(settings, project)
    interval = args.interval or settings.learning.retrain_interval or 3600
    while True:
        code = _once(settings, project)
        if code == 2:
            return code
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
