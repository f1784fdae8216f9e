// Tensor files: safetensors and NumPy .npy, read with bounds checks.
// Files are untrusted input: every length, offset and shape is checked against the
// bytes actually present before anything is allocated, and every problem is a
// microflex::Error naming the file (or "<memory>"). Writers go through path + ".tmp"
// and a rename, so a crash never leaves a half-written file under the real name.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace microflex {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// ---- safetensors ----
// Layout: 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {str: str}, "name": {"dtype": "F32", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// then the data buffer, which the tensors tile exactly (offsets relative to its start).
// dtypes: F32 F64 F16 BF16 I32 I64 BOOL.

// Writes `tensors` sorted by name, each contiguous, header padded with spaces to a
// multiple of 8. Non-CPU tensors are copied to the CPU; fake or undefined tensors,
// duplicate names and the reserved name "__metadata__" are errors.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// Returns the tensors (contiguous CPU tensors that own their data) in data-offset order,
// which is name order for files this library writes; fills `metadata` when given.
NamedTensors load_safetensors(const std::string& path,
                              std::map<std::string, std::string>* metadata = nullptr);
NamedTensors load_safetensors_from_memory(const uint8_t* data, size_t size,
                                          std::map<std::string, std::string>* metadata = nullptr);

// ---- NumPy .npy (format versions 1.0, 2.0, 3.0) ----
// descr '<f4' '<f8' '<f2' '<i4' '<i8' '|b1'; big-endian descrs ('>f4') are byte-swapped
// on load; fortran_order True is read and returned as a C-order tensor. Saving writes
// version 1.0 (2.0 when the header needs it), C order, little-endian. bfloat16 has no
// NumPy dtype, so saving one is an error.
void save_npy(const std::string& path, const Tensor& t);
Tensor load_npy(const std::string& path);
Tensor load_npy_from_memory(const uint8_t* data, size_t size);

}  // namespace microflex
