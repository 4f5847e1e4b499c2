"""``rpsam2-models list|promote NAME|rollback [--kind shift|decoder]``: manage versions under MODEL_DIR.

Promotion and rollback switch the LIVE pointer atomically; workers load the new live version
before their next job.  Errors (unknown version, nothing to roll back) exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time

from rpsam2_backend.core.errors import ConfigError
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.engine.checkpoint_store import KINDS, CheckpointStore


def _describe(store: CheckpointStore, name: str, live: str | None) -> str:
    meta = store.metadata(name)
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(meta["created_at"])) if meta.get("created_at") else "-"
    candidate = (meta.get("metrics") or {}).get("candidate") or {}
    mdsc = f"mDSC {candidate['mdsc']:.4f}±{candidate['std']:.4f}" if "mdsc" in candidate else "mDSC -"
    gate = (meta.get("gate") or {}).get("passed")
    verdict = {True: "passed gate", False: "refused", None: ""}[gate]
    marker = "*" if name == live else " "
    return f"{marker} {name}  {created}  {mdsc}  project {meta.get('project', '-')}  {verdict}".rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rpsam2-models", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("list", "promote", "rollback"))
    parser.add_argument("name", nargs="?", help="the version to promote (e.g. v0003)")
    parser.add_argument("--kind", choices=KINDS, default="shift", help="shift block or mask decoder (default shift)")
    parser.add_argument("--model-dir", help="default: MODEL_DIR")
    args = parser.parse_args(argv)
    try:
        model_dir = args.model_dir or Settings.from_env().model.model_dir
    except ConfigError as exc:
        print(f"rpsam2-models: {exc}", file=sys.stderr)
        return 2
    store = CheckpointStore(model_dir, args.kind)
    if args.command == "list":
        live = store.live()
        versions = store.versions()
        if not versions:
            print(f"no {args.kind} versions under {store.versions_dir}")
        for name in versions:
            print(_describe(store, name, live))
        default = "none (released SAM2 decoder)" if args.kind == "decoder" else "none (plain SAM2)"
        print(f"live {args.kind}: {live or default}")
        return 0
    if args.command == "promote":
        if not args.name:
            print("rpsam2-models: promote needs a version name (see `rpsam2-models list`)", file=sys.stderr)
            return 2
        try:
            store.promote(args.name, "manual promotion (rpsam2-models)")
        except FileNotFoundError as exc:
            known = ", ".join(store.versions()) or "none"
            print(f"rpsam2-models: {exc} (known {args.kind} versions: {known})", file=sys.stderr)
            return 2
        print(f"{args.kind} {args.name} is live")
        return 0
    if args.name:
        print("rpsam2-models: rollback takes no version name", file=sys.stderr)
        return 2
    try:
        previous = store.rollback("manual rollback (rpsam2-models)")
    except ValueError as exc:
        print(f"rpsam2-models: {exc}", file=sys.stderr)
        return 2
    print(f"{args.kind} rolled back; live is now {previous or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
