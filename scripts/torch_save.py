#!/usr/bin/env python3
"""Writes a safetensors checkpoint again in PyTorch's torch.save format, without PyTorch.

    torch_save.py IN.safetensors OUT_DIR [--shards N] [--tie NAME=OWNER] [--transpose NAME]
                  [--padded NAME] [--expand NAME] [--global MODULE.NAME] [--compress]

The archive is what torch.save (PyTorch >= 1.6) writes for a state dict: a zip of stored
entries `archive/data.pkl` (pickle protocol 2: an OrderedDict with `_metadata`, each tensor a
`torch._utils._rebuild_tensor_v2` call on a persistent-id typed storage), `archive/data/<key>`
(each storage's bytes, aligned to 64 bytes), `archive/byteorder` and `archive/version`.
Python's own pickle module writes the pickle, with stand-ins registered under torch's names.
--tie makes NAME share OWNER's storage; --transpose stores NAME as a transposed (non-contiguous)
view; --padded stores NAME as a view of a wider storage (a slice, as `w[:, :c]` of a padded
matrix, at an offset: non-contiguous rows); --expand stores NAME's first row only, expanded (stride 0);
--global adds an entry whose value is a call of that global (a hostile pickle);
--compress deflates the data entries; --shards N writes pytorch_model-0000i-of-0000N.bin and
pytorch_model.bin.index.json instead of pytorch_model.bin.
"""
import collections, io, json, pickle, struct, sys, types, zipfile

def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    out = collections.OrderedDict()
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        a, b = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], data[base + a:base + b])
    return out

STORAGE = {"F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage",
           "F64": "DoubleStorage", "I64": "LongStorage", "I32": "IntStorage",
           "I16": "ShortStorage", "I8": "CharStorage", "U8": "ByteStorage", "BOOL": "BoolStorage"}
SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

# Stand-ins under torch's names, so that pickle writes GLOBAL 'torch FloatStorage' etc.
torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils; torch._utils = utils
def _rebuild_tensor_v2(*a): raise RuntimeError("never called")
_rebuild_tensor_v2.__module__ = "torch._utils"; utils._rebuild_tensor_v2 = _rebuild_tensor_v2
for cls in STORAGE.values():
    t = type(cls, (), {}); t.__module__ = "torch"; setattr(torch, cls, t)

class Storage:
    def __init__(self, key, dtype, data): self.key, self.dtype, self.data = key, dtype, data
class Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride
class Hostile:
    def __init__(self, module, name): self.module, self.name = module, name

def contiguous_stride(shape):
    stride, acc = [], 1
    for d in reversed(shape):
        stride.insert(0, acc); acc *= d
    return stride

class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(torch, STORAGE[obj.dtype]), obj.key, "cpu",
                    len(obj.data) // SIZE[obj.dtype])
        return None
    def reducer_override(self, obj):
        if isinstance(obj, Tensor):
            return (_rebuild_tensor_v2, (obj.storage, obj.offset, tuple(obj.shape),
                                         tuple(obj.stride), False, collections.OrderedDict()))
        if isinstance(obj, Hostile):
            mod = types.ModuleType(obj.module); sys.modules[obj.module] = mod
            f = lambda *a: None; f.__module__ = obj.module; f.__qualname__ = obj.name
            setattr(mod, obj.name, f)
            return (f, ("echo pwned > /tmp/stowage-pwned",))
        return NotImplemented

def write_archive(path, tensors, ties, transposed, hostile, compress, padded=(), expanded=()):
    storages, sd = {}, collections.OrderedDict()
    for name, (dtype, shape, data) in tensors.items():
        if name in ties:
            owner = sd[ties[name]]
            sd[name] = Tensor(owner.storage, owner.offset, owner.shape, owner.stride)
            continue
        if name in transposed and len(shape) == 2:
            # Store the transpose's bytes; the tensor is a transposed view of them.
            r, c = shape; k = SIZE[dtype]
            t = b"".join(data[(i * c + j) * k:(i * c + j + 1) * k] for j in range(c) for i in range(r))
            st = Storage(str(len(storages)), dtype, t); storages[st.key] = st
            sd[name] = Tensor(st, 0, shape, [1, r]); continue
        if name in expanded and len(shape) == 2:
            r, c = shape; k = SIZE[dtype]
            st = Storage(str(len(storages)), dtype, data[:c * k]); storages[st.key] = st
            sd[name] = Tensor(st, 0, shape, [0, 1]); continue
        if name in padded and len(shape) == 2:
            # 3 elements of junk first, and 3 more after each row.
            r, c = shape; k = SIZE[dtype]; junk = b"\xab" * (3 * k)
            t = junk + b"".join(data[i * c * k:(i + 1) * c * k] + junk for i in range(r))
            st = Storage(str(len(storages)), dtype, t); storages[st.key] = st
            sd[name] = Tensor(st, 3, shape, [c + 3, 1]); continue
        st = Storage(str(len(storages)), dtype, data); storages[st.key] = st
        sd[name] = Tensor(st, 0, shape, contiguous_stride(shape))
    for g in hostile:
        module, name = g.rsplit(".", 1); sd["hostile"] = Hostile(module, name)
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    buf = io.BytesIO(); Pickler(buf, protocol=2).dump(sd)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        def put(name, data, method=zipfile.ZIP_STORED):
            info = zipfile.ZipInfo("archive/" + name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            start = z.fp.tell() + 30 + len(info.filename)
            pad = (-(start + 4)) % 64
            info.extra = struct.pack("<HH", 0x4646, pad) + b"Z" * pad  # align data to 64 bytes
            z.writestr(info, data)
        put("data.pkl", buf.getvalue())
        put("byteorder", b"little")
        for key, st in storages.items():
            put("data/" + key, st.data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
        put("version", b"3\n")

def main(argv):
    src, out = argv[0], argv[1]
    shards, ties, transposed, padded, hostile, compress = 1, {}, set(), set(), [], False
    expanded = set()
    i = 2
    while i < len(argv):
        a = argv[i]
        if a == "--shards": shards = int(argv[i + 1]); i += 2
        elif a == "--tie": n, o = argv[i + 1].split("="); ties[n] = o; i += 2
        elif a == "--transpose": transposed.add(argv[i + 1]); i += 2
        elif a == "--padded": padded.add(argv[i + 1]); i += 2
        elif a == "--expand": expanded.add(argv[i + 1]); i += 2
        elif a == "--global": hostile.append(argv[i + 1]); i += 2
        elif a == "--compress": compress = True; i += 1
        else: raise SystemExit(f"unknown argument {a}")
    tensors = read_safetensors(src)
    for n, o in ties.items():
        tensors.setdefault(n, tensors[o])
    if shards == 1:
        write_archive(f"{out}/pytorch_model.bin", tensors, ties, transposed, hostile, compress, padded, expanded)
        return
    names = list(tensors); per = -(-len(names) // shards); weight_map = {}
    for s in range(shards):
        part = collections.OrderedDict((n, tensors[n]) for n in names[s * per:(s + 1) * per])
        fname = f"pytorch_model-{s + 1:05d}-of-{shards:05d}.bin"
        write_archive(f"{out}/{fname}", part, {}, transposed, hostile if s == 0 else [], compress,
                      padded, expanded)
        weight_map.update({n: fname for n in part})
    json.dump({"metadata": {}, "weight_map": weight_map}, open(f"{out}/pytorch_model.bin.index.json", "w"))

if __name__ == "__main__":
    main(sys.argv[1:])
