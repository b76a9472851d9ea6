// IDX reader (the MNIST / Fashion-MNIST format), raw or gzip-compressed. Validates the magic
// number, the element type, the dimensions and the exact file length; any problem is a DataError
// naming the file, never a crash.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace xpand::data {

struct IdxArray {
  uint8_t type = 0;            // 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
  std::vector<int64_t> dims;   // e.g. (60000, 28, 28)
  std::vector<uint8_t> bytes;  // payload, big-endian as in the file
};

// Reads a whole IDX file (gzip detected by its magic bytes).
IdxArray idx_read(const std::string& path);
// Parses an in-memory IDX image; `name` is used in messages.
IdxArray idx_parse(std::vector<uint8_t> content, const std::string& name);
// Converts to a CPU tensor: u8 -> uint8, i8 -> int8, i16 -> int16, i32 -> int32, f32 -> float, f64 -> double.
torch::Tensor idx_to_tensor(const IdxArray& a);
// Writes an IDX file (uint8 payload), gzip-compressed when path ends in ".gz". For tests and tools.
void idx_write_u8(const std::string& path, const std::vector<int64_t>& dims, const std::vector<uint8_t>& data);

}  // namespace xpand::data
