"""Entry point of `label-studio-ml start rpsam2_backend` (which runs this file with `python`).

That is werkzeug's development server, for development and for label-studio-ml's users.  In
production gunicorn serves the same app factory (``deploy/gunicorn.conf.py``, ``make run-prod``).
"""

from __future__ import annotations

import os
import sys

# Run by path, this file puts rpsam2_backend/ itself first on sys.path, where its subpackages
# (queue/ above all) would shadow the standard library.  Put the project root there instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == _HERE:
    sys.path[0] = os.path.dirname(_HERE)

import argparse  # noqa: E402  (after the path fix)
import logging  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="RP-SAM2 Label Studio ML backend")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("PORT", 9090)))
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    parser.add_argument("--model-dir", help="overrides MODEL_DIR")
    parser.add_argument("-d", "--debug", action="store_true", help="Flask debug mode (development only)")
    parser.add_argument("--check", action="store_true", help="validate settings, load the model, exit")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"rpsam2-backend: ignoring unknown arguments {unknown}", file=sys.stderr)
    logging.basicConfig(
        level=args.log_level.upper(), format="[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s"
    )
    if args.model_dir:
        os.environ["MODEL_DIR"] = args.model_dir

    from rpsam2_backend.core.errors import ConfigError
    from rpsam2_backend.core.settings import get_settings
    from rpsam2_backend.web.app import create_app

    try:
        app = create_app(get_settings())
    except ConfigError as exc:
        print(f"rpsam2-backend: cannot start: {exc.message}", file=sys.stderr)
        sys.exit(2)
    if args.check:
        print("rpsam2-backend: settings and model OK")
        return
    app.run(host=args.host, port=args.port, debug=args.debug, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
