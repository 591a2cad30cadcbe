#!/usr/bin/env bash
# copy_tree.sh DEST: the repository's files as a clone has them (tracked, and untracked but
# not ignored; deleted ones left out) copied into the existing folder DEST. dist_check.sh
# and oldest_torch_check.sh build from such a copy, never from the tree's own build outputs.
set -euo pipefail
DEST="$(cd "$1" && pwd)"
cd "$(dirname "$0")/.."
git ls-files --cached --others --exclude-standard -z |
  while IFS= read -r -d '' f; do if [[ -e "$f" ]]; then printf '%s\0' "$f"; fi; done |
  tar --null -T - -cf - | tar -xf - -C "$DEST"
