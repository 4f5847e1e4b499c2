#!/usr/bin/env bash
# `make run`'s first step: the one SAM2 checkpoint the settings need (RPSAM2_SAM2_CONFIG,
# RPSAM2_CHECKPOINT_DIR / RPSAM2_SAM2_CHECKPOINT), fetched with its checks when it is missing.
# The backend process itself never downloads anything.
set -uo pipefail
python=${PYTHON:-python}
# "<path> <size>": size is Meta's name (large, ...) or "-" when nothing is to be fetched.
read -r path size < <("$python" - <<'PY'
from rpsam2_backend.core.settings import Settings
s = Settings.from_env()
path = s.checkpoint_path()
sizes = {"sam2.1_hiera_tiny.pt": "tiny", "sam2.1_hiera_small.pt": "small",
         "sam2.1_hiera_base_plus.pt": "base_plus", "sam2.1_hiera_large.pt": "large"}
if path is None or s.model.allow_random_weights and not path.is_file():
    print("-", "-")
else:
    print(path, sizes.get(path.name, "-") if not s.model.sam2_checkpoint else "-")
PY
) || exit 2
[ "$path" = "-" ] && exit 0
dir=$(dirname "$path")
if [ "$size" = "-" ]; then
  [ -f "$path" ] && exit 0
  echo "No SAM2 checkpoint at $path (RPSAM2_SAM2_CHECKPOINT): it is not one of Meta's files this script can fetch." >&2
  exit 2
fi
if PYTHON="$python" deploy/download_checkpoints.sh "$dir" "$size"; then exit 0; fi
cat >&2 <<MSG

Could not fetch $(basename "$path") (no internet here?). Either copy it to $path (or set
RPSAM2_SAM2_CHECKPOINT to where it is), or try the backend without weights: \`make run-demo\`
(random-weight SAM2: the whole path works, the masks are meaningless).
MSG
exit 2
