"""fsps.safetensors: reads a safetensors file (what fsps-export writes) with
numpy, for Debian's torch 1.13, which has no safetensors loader.

    import torch, fsps.safetensors
    state = fsps.safetensors.load("model.safetensors")   # {name: tensor}
    meta = fsps.safetensors.metadata("model.safetensors")  # __metadata__

The format: an 8-byte little-endian header length, a JSON header naming
each tensor's dtype, shape and [begin, end) byte range in the data that
follows, and an optional "__metadata__" of strings.
"""
import json
import struct

import numpy as np

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8",
           "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def _header(f):
    (n,) = struct.unpack("<Q", f.read(8))
    if n > 100 << 20:
        raise ValueError("safetensors header of %d bytes: not a safetensors "
                         "file" % n)
    return n, json.loads(f.read(n))


def metadata(path):
    """The file's __metadata__ (a dict of strings; {} when absent)."""
    with open(path, "rb") as f:
        return _header(f)[1].get("__metadata__", {})


def load_numpy(path):
    """{name: numpy array} of every tensor in the file."""
    with open(path, "rb") as f:
        n, head = _header(f)
        data = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=_DTYPES[t["dtype"]])
        out[name] = arr.reshape(t["shape"]).copy()
    return out


def load(path):
    """{name: torch.Tensor} of every tensor in the file, for
    module.load_state_dict."""
    import torch
    return {k: torch.from_numpy(v) for k, v in load_numpy(path).items()}
