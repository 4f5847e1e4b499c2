#!/usr/bin/env bash
# Download Meta's SAM2.1 checkpoints (needs internet; ~1.5 GB for all four).
# Usage: deploy/download_checkpoints.sh [DIR] [tiny|small|base_plus|large ...]
set -euo pipefail
dir=${1:-checkpoints}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(tiny small base_plus large)
base=https://dl.fbaipublicfiles.com/segment_anything_2/092824
mkdir -p "$dir"
for size in "${sizes[@]}"; do
  file=sam2.1_hiera_${size}.pt
  if [ -s "$dir/$file" ]; then echo "have $dir/$file"; continue; fi
  echo "fetching $file"
  curl -fL --retry 3 -o "$dir/$file.part" "$base/$file"
  mv "$dir/$file.part" "$dir/$file"
done
echo "Set RPSAM2_SAM2_CHECKPOINT=$dir/sam2.1_hiera_large.pt (or RPSAM2_CHECKPOINT_DIR=$dir)."
