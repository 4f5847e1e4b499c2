#!/usr/bin/env bash
# Download Meta's SAM2.1 checkpoints (needs internet; ~1.5 GB for all four).
# Usage: deploy/download_checkpoints.sh [DIR] [tiny|small|base_plus|large ...]
#
# Checks: a download goes to FILE.part and is renamed only when complete; a checkpoint is a zip
# archive, so every member's CRC-32 is verified before the rename (a truncated or damaged file
# never becomes FILE); the SHA-256 of each accepted file is recorded in DIR/SHA256SUMS and checked
# again on every later run (deploy/fetch_checkpoint.sh, i.e. every `make run`), so a file changed
# after its download is refused.  CHECKPOINT_BASE_URL overrides Meta's address (a mirror).
set -euo pipefail
dir=${1:-checkpoints}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(tiny small base_plus large)
base=${CHECKPOINT_BASE_URL:-https://dl.fbaipublicfiles.com/segment_anything_2/092824}
python=${PYTHON:-python3}
mkdir -p "$dir"
for size in "${sizes[@]}"; do
  case "$size" in tiny|small|base_plus|large) ;; *) echo "unknown size '$size' (tiny, small, base_plus, large)" >&2; exit 2 ;; esac
  file=sam2.1_hiera_${size}.pt
  if [ -s "$dir/$file" ]; then
    if [ -f "$dir/SHA256SUMS" ] && grep -q " $file\$" "$dir/SHA256SUMS"; then
      (cd "$dir" && grep " $file\$" SHA256SUMS | sha256sum --quiet -c -) \
        || { echo "$dir/$file does not match its SHA-256 recorded at download (SHA256SUMS): delete it and fetch again" >&2; exit 3; }
    fi
    echo "have $dir/$file"; continue
  fi
  echo "fetching $file from $base"
  curl -fL --retry 3 --connect-timeout 15 -o "$dir/$file.part" "$base/$file"
  if ! "$python" -c 'import sys, zipfile; bad = zipfile.ZipFile(sys.argv[1]).testzip(); sys.exit(f"damaged member {bad}" if bad else 0)' "$dir/$file.part"; then
    rm -f "$dir/$file.part"; echo "$file is not a complete checkpoint (zip CRC check failed); nothing kept" >&2; exit 3
  fi
  mv "$dir/$file.part" "$dir/$file"
  (cd "$dir" && { grep -v " $file\$" SHA256SUMS 2>/dev/null || true; sha256sum "$file"; } > SHA256SUMS.new && mv SHA256SUMS.new SHA256SUMS)
  echo "verified $dir/$file (SHA-256 $(cut -d' ' -f1 < <(grep " $file\$" "$dir/SHA256SUMS")))"
done
echo "Set RPSAM2_SAM2_CHECKPOINT=$dir/sam2.1_hiera_large.pt (or RPSAM2_CHECKPOINT_DIR=$dir)."
