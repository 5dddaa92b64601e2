#!/usr/bin/env python3
"""Print what a CTranslate2 model.bin really holds: version, spec, every variable's dtype and shape,
the total size per dtype, and whether the file is complete (all declared bytes present).

Usage: inspect_ct2.py MODEL_DIR_OR_BIN [--vars]
"""
import hashlib
import struct
import sys
from collections import Counter
from pathlib import Path

DTYPES = {0: ("f32", 4), 1: ("i8", 1), 2: ("i16", 2), 3: ("i32", 4), 4: ("f16", 2), 5: ("bf16", 2)}


def read_string(f):
    (n,) = struct.unpack("<H", f.read(2))
    return f.read(n)[:-1].decode()


def inspect(path: Path, show_vars: bool):
    size = path.stat().st_size
    out = {"file": str(path), "bytes": size}
    with path.open("rb") as f:
        (version,) = struct.unpack("<I", f.read(4))
        out["binary_version"] = version
        if version >= 2:
            out["spec"] = read_string(f)
            (out["spec_revision"],) = struct.unpack("<I", f.read(4))
        (nvars,) = struct.unpack("<I", f.read(4))
        bytes_by_dtype = Counter()
        complete = True
        variables = []
        for _ in range(nvars):
            name = read_string(f)
            (rank,) = struct.unpack("<B", f.read(1))
            dims = struct.unpack(f"<{rank}I", f.read(4 * rank))
            if version >= 4:
                dtype_id, nbytes = struct.unpack("<BI", f.read(5))
                dtype = DTYPES[dtype_id][0]
            else:
                item, count = struct.unpack("<BI", f.read(5))
                dtype, nbytes = f"item{item}", item * count
            here = f.tell()
            if here + nbytes > size:
                complete = False
                variables.append((name, dtype, dims, "TRUNCATED"))
                break
            f.seek(nbytes, 1)
            bytes_by_dtype[dtype] += nbytes
            variables.append((name, dtype, dims, nbytes))
        out["declared_variables"] = nvars
        out["read_variables"] = len(variables)
        out["complete"] = complete
        out["bytes_by_dtype"] = dict(bytes_by_dtype)
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    out["sha256"] = h.hexdigest()
    for k, v in out.items():
        print(f"{k}: {v}")
    weights = [v for v in variables if v[0].endswith("/weight") and len(v[2]) == 2]
    if weights:
        print("first 2-D weight:", weights[0][:3])
    emb = [v for v in variables if v[0] == "decoder/embeddings/weight"]
    if emb:
        print("vocab x d:", emb[0][2])
    print("encoder layers:", len({v[0].split('/')[1] for v in variables if v[0].startswith('encoder/layer_') and not v[0].startswith('encoder/layer_norm')}))
    print("decoder layers:", len({v[0].split('/')[1] for v in variables if v[0].startswith('decoder/layer_') and not v[0].startswith('decoder/layer_norm')}))
    if show_vars:
        for v in variables:
            print("  ", *v)


if __name__ == "__main__":
    p = Path(sys.argv[1])
    inspect(p / "model.bin" if p.is_dir() else p, "--vars" in sys.argv)
