"""One PyTorch/transformers load for stowage's load_memory bench, in a fresh process.

python3 torch_load.py DIR: loads the checkpoint in DIR (a llama config.json and safetensors
shards) with AutoModelForCausalLM.from_pretrained(low_cpu_mem_usage=True) as float32, what
stowage's CPU backend holds, and prints one JSON line in the bench's child format. The peak
RSS is reset after torch and transformers are imported; "base" is the RSS at that moment.
"""

import glob
import json
import os
import resource
import sys
import time


def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def main():
    path = sys.argv[1]
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    digits = [p for p in transformers.__version__.split(".")[:2] if p.isdigit()]
    # `torch_dtype` became `dtype` in transformers 4.56.
    key = "dtype" if tuple(int(p) for p in digits) >= (4, 56) else "torch_dtype"
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(path, "*.safetensors")))
    base = status()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        path, low_cpu_mem_usage=True, **{key: torch.float32}
    )
    seconds = time.perf_counter() - started
    s = status()
    after = resource.getrusage(resource.RUSAGE_SELF)
    seen, cpu = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            cpu += t.numel() * t.element_size()
    print(json.dumps({
        "scenario": "torch", "seconds": seconds, "bytes": total, "peak": s["VmHWM"],
        "anon": s["RssAnon"], "file": s["RssFile"], "base": base, "cpu_bytes": cpu,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "major_faults": after.ru_majflt - before.ru_majflt,
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
    }))


main()
