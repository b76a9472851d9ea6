// IDX reading and writing (see idx.h).
#include "data/idx.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include <cstring>
#include <fstream>

#include "core/error.h"

namespace xpand::data {

namespace {

int element_size(uint8_t type) {
  switch (type) {
    case 0x08:
    case 0x09:
      return 1;
    case 0x0B:
      return 2;
    case 0x0C:
    case 0x0D:
      return 4;
    case 0x0E:
      return 8;
    default:
      return 0;
  }
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream probe(path, std::ios::binary);
  if (!probe) throw DataError(fmt::format("{}: cannot open IDX file ({})", path, std::strerror(errno)));
  unsigned char magic[2] = {0, 0};
  probe.read(reinterpret_cast<char*>(magic), 2);
  bool gz = probe.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  probe.close();
  std::vector<uint8_t> out;
  if (!gz) {
    std::ifstream in(path, std::ios::binary);
    out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) throw DataError(fmt::format("{}: read error", path));
    return out;
  }
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw DataError(fmt::format("{}: cannot open gzip file", path));
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      throw DataError(fmt::format("{}: corrupt gzip stream ({})", path, msg));
    }
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
    if (out.size() > (size_t(1) << 35))
      throw DataError(fmt::format("{}: decompressed size exceeds 32 GiB; not an IDX file?", path));
  }
  int err = 0;
  const char* msg = gzerror(f, &err);
  std::string m = msg ? msg : "";
  gzclose(f);
  if (err != Z_OK && err != Z_STREAM_END)
    throw DataError(fmt::format("{}: corrupt or truncated gzip stream ({})", path, m));
  return out;
}

}  // namespace

IdxArray idx_parse(std::vector<uint8_t> c, const std::string& name) {
  if (c.size() < 4) throw DataError(fmt::format("{}: too short for an IDX header ({} bytes)", name, c.size()));
  if (c[0] != 0 || c[1] != 0)
    throw DataError(fmt::format("{}: bad IDX magic number {:02x}{:02x}{:02x}{:02x} (expected 0000 then type and rank)",
                                name, c[0], c[1], c[2], c[3]));
  IdxArray a;
  a.type = c[2];
  int esize = element_size(a.type);
  if (esize == 0) throw DataError(fmt::format("{}: unknown IDX element type 0x{:02x}", name, a.type));
  int ndim = c[3];
  if (ndim < 1 || ndim > 8) throw DataError(fmt::format("{}: unsupported IDX rank {}", name, ndim));
  size_t header = 4 + 4 * size_t(ndim);
  if (c.size() < header)
    throw DataError(
        fmt::format("{}: truncated IDX header (rank {} needs {} bytes, file has {})", name, ndim, header, c.size()));
  uint64_t count = 1;
  for (int i = 0; i < ndim; ++i) {
    const uint8_t* p = c.data() + 4 + 4 * i;
    uint32_t d = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
    if (d == 0 || d > (1u << 31)) throw DataError(fmt::format("{}: invalid dimension {} = {}", name, i, d));
    count *= d;
    if (count > (uint64_t(1) << 36)) throw DataError(fmt::format("{}: dimensions too large", name));
    a.dims.push_back(d);
  }
  uint64_t expected = count * esize, have = c.size() - header;
  if (have < expected)
    throw DataError(fmt::format("{}: truncated: dimensions {} need {} bytes of data, file has {}", name,
                                fmt::join(a.dims, "x"), expected, have));
  if (have > expected)
    throw DataError(fmt::format("{}: {} unexpected trailing bytes after {} bytes of data (dimensions {})", name,
                                have - expected, expected, fmt::join(a.dims, "x")));
  c.erase(c.begin(), c.begin() + header);
  a.bytes = std::move(c);
  return a;
}

IdxArray idx_read(const std::string& path) { return idx_parse(read_all(path), path); }

torch::Tensor idx_to_tensor(const IdxArray& a) {
  torch::ScalarType st;
  switch (a.type) {
    case 0x08:
      st = torch::kUInt8;
      break;
    case 0x09:
      st = torch::kInt8;
      break;
    case 0x0B:
      st = torch::kInt16;
      break;
    case 0x0C:
      st = torch::kInt32;
      break;
    case 0x0D:
      st = torch::kFloat32;
      break;
    default:
      st = torch::kFloat64;
      break;
  }
  int esize = element_size(a.type);
  std::vector<uint8_t> host = a.bytes;
  if (esize > 1)  // big-endian to host order
    for (size_t i = 0; i < host.size(); i += esize) std::reverse(host.begin() + i, host.begin() + i + esize);
  auto t = torch::empty(a.dims, torch::TensorOptions().dtype(st));
  std::memcpy(t.data_ptr(), host.data(), host.size());
  return t;
}

void idx_write_u8(const std::string& path, const std::vector<int64_t>& dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> c = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (int64_t d : dims)
    for (int s = 24; s >= 0; s -= 8) c.push_back(static_cast<uint8_t>((d >> s) & 0xff));
  c.insert(c.end(), data.begin(), data.end());
  bool gz = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    if (!f || gzwrite(f, c.data(), static_cast<unsigned>(c.size())) != int(c.size()))
      throw DataError(fmt::format("{}: cannot write gzip file", path));
    gzclose(f);
  } else {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(c.data()), std::streamsize(c.size()));
    if (!out) throw DataError(fmt::format("{}: cannot write file", path));
  }
}

}  // namespace xpand::data
