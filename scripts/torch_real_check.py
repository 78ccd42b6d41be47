"""Checks stowage against real PyTorch: writes torch.save checkpoints of several architectures
(Llama f32/f16/bf16: plain, tied head, transposed views, slices of wider storages, sharded with
pytorch_model.bin.index.json; BERT with an int64 expanded-view buffer, single and sharded), the
same tensors with safetensors.torch.save_file, and a hostile pickle; then checks with the
stowage binary that each .bin plans as its safetensors, loads to the same values (on the CPU,
and split with disk tensors converted to bf16 in the offload folder), converts to tensor data
byte-identical to save_file's, and that the hostile pickle is refused without running.

Needs torch and safetensors (`pip install torch safetensors`); not run in CI (the wheel is
gigabytes). Usage: python scripts/torch_real_check.py target/release/stowage /tmp/torch-check
"""
import json, os, subprocess, sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

def llama(dtype, tied, strided):
    H, I, V, L, KV = 32, 64, 128, 2, 16
    sd = {}
    def w(o, i):
        if strided == "t":
            return torch.randn(i, o).to(dtype).t()          # transpose view
        if strided == "slice":
            return torch.randn(2 * o, i).to(dtype)[o:]       # offset view into a wider storage
        return torch.randn(o, i).to(dtype)
    sd["model.embed_tokens.weight"] = torch.randn(V, H).to(dtype)
    for l in range(L):
        p = f"model.layers.{l}."
        sd[p + "self_attn.q_proj.weight"] = w(H, H)
        sd[p + "self_attn.k_proj.weight"] = w(KV, H)
        sd[p + "self_attn.v_proj.weight"] = w(KV, H)
        sd[p + "self_attn.o_proj.weight"] = w(H, H)
        sd[p + "mlp.gate_proj.weight"] = w(I, H)
        sd[p + "mlp.up_proj.weight"] = w(I, H)
        sd[p + "mlp.down_proj.weight"] = w(H, I)
        sd[p + "input_layernorm.weight"] = torch.randn(H).to(dtype)
        sd[p + "post_attention_layernorm.weight"] = torch.randn(H).to(dtype)
    sd["model.norm.weight"] = torch.randn(H).to(dtype)
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"] if tied else torch.randn(V, H).to(dtype)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
           "torch_dtype": {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype],
           "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": V, "tie_word_embeddings": tied, "rms_norm_eps": 1e-5}
    return sd, cfg

def bert(dtype):
    H, I, V, L = 32, 64, 128, 2
    sd = {}
    sd["embeddings.word_embeddings.weight"] = torch.randn(V, H).to(dtype)
    sd["embeddings.position_embeddings.weight"] = torch.randn(64, H).to(dtype)
    sd["embeddings.token_type_embeddings.weight"] = torch.randn(2, H).to(dtype)
    sd["embeddings.LayerNorm.weight"] = torch.randn(H).to(dtype)
    sd["embeddings.LayerNorm.bias"] = torch.randn(H).to(dtype)
    sd["embeddings.position_ids"] = torch.arange(64).expand(1, -1)   # int64 buffer, an expanded view
    for l in range(L):
        p = f"encoder.layer.{l}."
        for n, (o, i) in {"attention.self.query": (H, H), "attention.self.key": (H, H), "attention.self.value": (H, H),
                          "attention.output.dense": (H, H), "intermediate.dense": (I, H), "output.dense": (H, I)}.items():
            sd[p + n + ".weight"] = torch.randn(o, i).to(dtype)
            sd[p + n + ".bias"] = torch.randn(o).to(dtype)
        for n in ["attention.output.LayerNorm", "output.LayerNorm"]:
            sd[p + n + ".weight"] = torch.randn(H).to(dtype)
            sd[p + n + ".bias"] = torch.randn(H).to(dtype)
    sd["pooler.dense.weight"] = torch.randn(H, H).to(dtype)
    sd["pooler.dense.bias"] = torch.randn(H).to(dtype)
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "torch_dtype": "float32", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": 4, "vocab_size": V,
           "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
    return sd, cfg

def write(out, name, sd, cfg, shards=1):
    b = os.path.join(out, name, "bin"); s = os.path.join(out, name, "st")
    os.makedirs(b, exist_ok=True); os.makedirs(s, exist_ok=True)
    for d in (b, s):
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    names = list(sd)
    if shards == 1:
        torch.save(sd, os.path.join(b, "pytorch_model.bin"))
    else:
        per = (len(names) + shards - 1) // shards
        wm = {}
        for k in range(shards):
            part = names[k * per:(k + 1) * per]
            fn = f"pytorch_model-{k+1:05d}-of-{shards:05d}.bin"
            torch.save({n: sd[n] for n in part}, os.path.join(b, fn))
            for n in part: wm[n] = fn
        json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(b, "pytorch_model.bin.index.json"), "w"))
    st = {}
    seen = {}
    for n, t in sd.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key in seen and cfg.get("tie_word_embeddings"):
            continue   # what transformers saves for a tied head: the owner only
        seen[key] = n
        st[n] = t.contiguous().clone()
    save_file(st, os.path.join(s, "model.safetensors"))

class Evil:
    """What a hostile checkpoint pickles: a call of os.system when unpickled."""

    def __init__(self, out):
        self.out = out

    def __reduce__(self):
        return (os.system, (f"touch {self.out}/pwned",))


def make(out):
    torch.manual_seed(0)
    for dt in [torch.float32, torch.float16, torch.bfloat16]:
        tag = str(dt).split(".")[1]
        write(out, f"llama-{tag}", *llama(dt, False, None))
        write(out, f"llama-{tag}-tied", *llama(dt, True, None))
        write(out, f"llama-{tag}-transposed", *llama(dt, False, "t"))
        write(out, f"llama-{tag}-sliced-sharded", *llama(dt, False, "slice"), shards=3)
    write(out, "bert-f32", *bert(torch.float32))
    write(out, "bert-f32-sharded", *bert(torch.float32), shards=2)
    os.makedirs(f"{out}/evil/bin", exist_ok=True)
    torch.save({"w": torch.zeros(2), "x": Evil(out)}, f"{out}/evil/bin/pytorch_model.bin")

def run(S, *args):
    p = subprocess.run([S, *args], capture_output=True, text=True)
    return p
def js(S, *args):
    p = run(S, *args)
    if p.returncode != 0:
        raise SystemExit(f"{args}: rc={p.returncode}\n{p.stderr}")
    return json.loads(p.stdout)
def tensors(path):
    d = {}
    files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    for f in files:
        with safe_open(os.path.join(path, f), framework="pt") as g:
            for k in g.keys(): d[k] = g.get_tensor(k)
    return d


def check(S, out):
    bad = 0
    for case in sorted(os.listdir(out)):
        if case == "evil": continue
        b, s = f"{out}/{case}/bin", f"{out}/{case}/st"
        budget = ["--max-memory", "cpu=90KiB", "--max-memory", "disk=1GiB", "--max-seq-len", "8"]
        pb, ps = js(S, "plan", b, *budget, "--json"), js(S, "plan", s, *budget, "--json")
        same_plan = pb["device_map"] == ps["device_map"] and pb["total_bytes"] == ps["total_bytes"]
        lb, ls = js(S, "load", b, "--device-map", "cpu", "--checksums", "--json"), js(S, "load", s, "--device-map", "cpu", "--checksums", "--json")
        common = set(lb["checksums"]) & set(ls["checksums"])
        diff = [n for n in common if lb["checksums"][n] != ls["checksums"][n]]
        # a split load: cpu, and disk converted to bf16 in the offload folder
        off = [*budget, "--dtype", "bf16", "--checksums", "--json"]
        ob = js(S, "load", b, *off, "--offload-folder", f"{out}/{case}/off-b")
        os_ = js(S, "load", s, *off, "--offload-folder", f"{out}/{case}/off-s")
        odiff = [n for n in ob["checksums"] if ob["checksums"][n] != os_["checksums"].get(n, ob["checksums"][n])]
        # convert, then byte-compare with save_file's output
        conv = f"{out}/{case}/conv"
        p = run(S, "convert", b, conv)
        if p.returncode != 0:
            print(case, "convert failed", p.stderr); bad += 1; continue
        tc, ts = tensors(conv), tensors(s)
        cdiff = [n for n in ts if n not in tc or tc[n].dtype != ts[n].dtype or tc[n].shape != ts[n].shape
                 or not torch.equal(tc[n].contiguous().view(torch.uint8), ts[n].contiguous().view(torch.uint8))]
        extra = sorted(set(tc) - set(ts))
        ok = same_plan and not diff and not odiff and not cdiff and len(common) == len(ls["checksums"])
        bad += not ok
        print(f"{case}: plan {'same' if same_plan else 'DIFFERS'}; cpu load {len(common)} compared, {len(diff)} differ; "
              f"split load ({sum(1 for c in ob['checksums'].values() if c['device'] == 'cpu')} on cpu, "
            f"{(ob['offload'] or {}).get('tensors', 0)} converted to disk, {ob['disk_in_place']} read in place) "
            f"{len(odiff)} differ; "
              f"convert {len(ts)} compared, {len(cdiff)} differ, extra {extra}; tied {len(lb['tied'])}")
    p = run(S, "plan", f"{out}/evil/bin")
    print("evil:", p.returncode, p.stderr.strip().splitlines()[-1][:200], "| pwned file:", os.path.exists(f"{out}/pwned"))
    bad += p.returncode != 1 or os.path.exists(f"{out}/pwned")
    print("failures:", bad)
    return bad


if __name__ == "__main__":
    stowage, out = sys.argv[1], sys.argv[2]
    make(out)
    sys.exit(1 if check(stowage, out) else 0)
