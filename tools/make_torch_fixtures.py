#!/usr/bin/env python3
"""Writes the tensor-file fixtures that tests/core/serialize_test.cpp reads.

Needs PyTorch and NumPy (no network, and not the `safetensors` package: the
safetensors file is written by the small writer below from the bytes of torch
tensors). Produces, under tests/data/ (or --out):
  torch_tensors.safetensors      small tensors made by torch with a fixed seed
  torch_tensors_official.safetensors
                                 the same tensors written by the `safetensors`
                                 package, only when it is installed
  numpy_arrays/*.npy             arrays saved by np.save
  torch_tensors_expected.json    every value as a float, so the C++ test checks the
                                 values independently of the reader under test
Usage: python3 tools/make_torch_fixtures.py [--out DIR]
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

# safetensors dtype names and their item sizes.
ST_DTYPES = {
    torch.float32: ("F32", 4),
    torch.float64: ("F64", 8),
    torch.float16: ("F16", 2),
    torch.bfloat16: ("BF16", 2),
    torch.int32: ("I32", 4),
    torch.int64: ("I64", 8),
    torch.bool: ("BOOL", 1),
}
NP_DTYPES = {
    np.dtype("float32"): "F32",
    np.dtype("float64"): "F64",
    np.dtype("float16"): "F16",
    np.dtype("int32"): "I32",
    np.dtype("int64"): "I64",
    np.dtype("bool"): "BOOL",
}


def torch_tensors():
    torch.manual_seed(0)
    return {
        "f32": torch.randn(3, 4),
        "f64": torch.randn(5, dtype=torch.float64),
        "f16": torch.randn(2, 3).half(),
        "bf16": torch.randn(7).bfloat16(),
        "i32": torch.randint(-1000, 1000, (4,), dtype=torch.int32),
        # Beyond 2^32 but below 2^53, so the values stay exact as JSON floats.
        "i64": torch.randint(-(2**40), 2**40, (2, 2), dtype=torch.int64),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.randn(()),
        "empty": torch.zeros(0, 3),
    }


def tensor_bytes(t):
    # reshape(-1) also covers 0-d tensors, which view(dtype) refuses to reinterpret.
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def write_safetensors(path, tensors, metadata):
    """The safetensors layout: u64 LE header length, JSON header, data buffer.

    The data goes in the order the `safetensors` package uses (largest alignment
    first, then by name), which is not name order, so readers that assume name order
    are caught.
    """
    order = sorted(tensors, key=lambda n: (-ST_DTYPES[tensors[n].dtype][1], n))
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in order:
        t = tensors[name]
        data = tensor_bytes(t)
        assert len(data) == t.numel() * ST_DTYPES[t.dtype][1]
        header[name] = {
            "dtype": ST_DTYPES[t.dtype][0],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def official_safetensors(path, own_path, tensors, metadata):
    """With the `safetensors` package installed: checks that it reads the file written
    above, and writes the same tensors with it. Returns whether it did."""
    try:
        from safetensors.torch import load_file, save_file
    except ImportError:
        return False
    loaded = load_file(own_path)
    assert sorted(loaded) == sorted(tensors)
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t), name
    save_file(tensors, path, metadata=metadata)
    return True


def numpy_arrays():
    rng = np.random.default_rng(0)
    fortran = np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32))
    assert fortran.flags.f_contiguous and not fortran.flags.c_contiguous
    return {
        "f4.npy": rng.standard_normal((3, 4)).astype(np.float32),
        "f8.npy": rng.standard_normal(5),
        "f2.npy": rng.standard_normal((2, 3)).astype(np.float16),
        "i4.npy": rng.integers(-1000, 1000, size=4).astype(np.int32),
        "i8.npy": rng.integers(-(2**40), 2**40, size=(2, 2)).astype(np.int64),
        "bool.npy": rng.standard_normal(3) > 0,
        "fortran_f4.npy": fortran,
        "big_endian_f8.npy": rng.standard_normal(4).astype(">f8"),
        "scalar_f4.npy": np.array(rng.standard_normal(), dtype=np.float32),
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(here, "..", "tests", "data"))
    args = parser.parse_args()
    # Tensor bytes are written as the host stores them; safetensors is little-endian.
    assert sys.byteorder == "little", "run this on a little-endian machine"

    out = os.path.abspath(args.out)
    npy_dir = os.path.join(out, "numpy_arrays")
    os.makedirs(npy_dir, exist_ok=True)

    tensors = torch_tensors()
    metadata = {"format": "pt", "source": "tools/make_torch_fixtures.py"}
    st_name = "torch_tensors.safetensors"
    st_path = os.path.join(out, st_name)
    write_safetensors(st_path, tensors, metadata)
    st_files = [st_name]
    official_name = "torch_tensors_official.safetensors"
    official_path = os.path.join(out, official_name)
    if official_safetensors(official_path, st_path, tensors, metadata):
        st_files.append(official_name)
    elif os.path.exists(official_path):
        os.remove(official_path)

    expected = {
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "safetensors": {
            "files": st_files,
            "metadata": metadata,
            "tensors": {
                name: {
                    "dtype": ST_DTYPES[t.dtype][0],
                    "shape": list(t.shape),
                    "values": t.double().reshape(-1).tolist(),
                }
                for name, t in sorted(tensors.items())
            },
        },
        "npy": {},
    }
    for name, a in numpy_arrays().items():
        path = os.path.join(npy_dir, name)
        np.save(path, a)
        back = np.load(path)
        assert back.dtype == a.dtype and np.array_equal(back, a), name
        expected["npy"][name] = {
            "dtype": NP_DTYPES[a.dtype.newbyteorder("=")],
            "descr": np.lib.format.dtype_to_descr(a.dtype),
            "fortran_order": bool(a.flags.f_contiguous and not a.flags.c_contiguous),
            "shape": list(a.shape),
            "values": a.astype(np.float64).ravel(order="C").tolist(),
        }
    with open(os.path.join(npy_dir, "fortran_f4.npy"), "rb") as f:
        assert b"'fortran_order': True" in f.read(128), "fortran_f4.npy is not in Fortran order"

    with open(os.path.join(out, "torch_tensors_expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=False)
        f.write("\n")

    written = [os.path.join(out, f) for f in st_files]
    written.append(os.path.join(out, "torch_tensors_expected.json"))
    written += [os.path.join(npy_dir, name) for name in expected["npy"]]
    total = sum(os.path.getsize(p) for p in written)
    print(f"wrote fixtures to {out}: {total} bytes")
    assert total < 20 * 1024, "fixtures should stay under 20 KB"


if __name__ == "__main__":
    main()
