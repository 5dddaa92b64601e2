#!/usr/bin/env python3
"""Packs / unpacks the GPU reference bundle (tests/model/gpu_whisper_test.cpp writes it with
WISP_GPU_REF_OUT=DIR; tests/kernels/gpu_whisper_ref_test.cpp reads it with WISP_GPU_REF=DIR) so that the
tiny.en one fits the device machine's 64 MiB carry: the fp16 weights are split into high bytes (sign,
exponent: lzma-compressible) and low bytes (mantissa noise: stored as is).
  ref_bundle.py pack DIR PACKED_DIR     ref_bundle.py unpack PACKED_DIR DIR"""
import lzma, os, sys


def pack(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src)):
        data = open(os.path.join(src, name), "rb").read()
        if name == "weights.bin":
            open(os.path.join(dst, "weights.hi.xz"), "wb").write(lzma.compress(data[1::2], preset=6))
            open(os.path.join(dst, "weights.lo"), "wb").write(data[0::2])
        else:
            open(os.path.join(dst, name + ".xz"), "wb").write(lzma.compress(data, preset=6))


def unpack(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src)):
        if name == "weights.lo":
            continue
        data = lzma.decompress(open(os.path.join(src, name), "rb").read())
        if name == "weights.hi.xz":
            lo = open(os.path.join(src, "weights.lo"), "rb").read()
            out = bytearray(2 * len(lo))
            out[0::2], out[1::2] = lo, data
            open(os.path.join(dst, "weights.bin"), "wb").write(out)
        else:
            open(os.path.join(dst, name[:-3]), "wb").write(data)


if __name__ == "__main__":
    {"pack": pack, "unpack": unpack}[sys.argv[1]](sys.argv[2], sys.argv[3])
