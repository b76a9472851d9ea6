// IDX parsing: good files (raw and gzip) read back exactly; corrupt or truncated files are
// DataErrors naming the file; the installed Fashion-MNIST has its documented shape.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "../test_util.h"
#include "core/error.h"
#include "data/idx.h"

using namespace xpand;
using namespace xpand::data;

namespace {

std::vector<uint8_t> ramp(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t((i * 37 + 11) % 256);
  return v;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Expects idx_read(path) to throw a DataError whose message contains the path and `needle`.
void expect_error(const std::string& path, const std::string& needle) {
  try {
    idx_read(path);
    FAIL() << "no error for " << path;
  } catch (const DataError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find(needle), std::string::npos) << "expected '" << needle << "' in: " << m;
  }
}

}  // namespace

TEST(Idx, RawAndGzipRoundTrip) {
  test::TempDir dir;
  auto data = ramp(5 * 4 * 3);
  for (const char* name : {"a-idx3-ubyte", "a-idx3-ubyte.gz"}) {
    idx_write_u8(dir.file(name), {5, 4, 3}, data);
    IdxArray a = idx_read(dir.file(name));
    EXPECT_EQ(a.type, 0x08);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{5, 4, 3}));
    EXPECT_EQ(a.bytes, data);
    auto t = idx_to_tensor(a);
    EXPECT_EQ(t.sizes().vec(), (std::vector<int64_t>{5, 4, 3}));
    EXPECT_EQ(t.dtype(), torch::kUInt8);
    EXPECT_EQ(t[2][1][0].item<int>(), data[2 * 12 + 1 * 3 + 0]);
  }
}

TEST(Idx, BigEndianMultiByteTypes) {
  // int32 payload 0x01020304 and -2, float32 1.5f; header written by hand (independent of the writer).
  std::vector<uint8_t> i32 = {0, 0, 0x0C, 1, 0, 0, 0, 2, 0x01, 0x02, 0x03, 0x04, 0xff, 0xff, 0xff, 0xfe};
  auto t = idx_to_tensor(idx_parse(i32, "i32"));
  EXPECT_EQ(t[0].item<int32_t>(), 0x01020304);
  EXPECT_EQ(t[1].item<int32_t>(), -2);
  std::vector<uint8_t> f32 = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3f, 0xc0, 0x00, 0x00};
  EXPECT_FLOAT_EQ(idx_to_tensor(idx_parse(f32, "f32"))[0].item<float>(), 1.5f);
}

TEST(Idx, CorruptFilesAreClearErrors) {
  test::TempDir dir;
  auto data = ramp(6 * 7);
  idx_write_u8(dir.file("good"), {6, 7}, data);
  auto good = read_bytes(dir.file("good"));

  auto variant = [&](const std::string& name, std::vector<uint8_t> b) {
    write_bytes(dir.file(name), b);
    return dir.file(name);
  };
  auto bad_magic = good;
  bad_magic[0] = 0x1a;
  expect_error(variant("bad_magic", bad_magic), "bad IDX magic");
  auto bad_type = good;
  bad_type[2] = 0x07;
  expect_error(variant("bad_type", bad_type), "unknown IDX element type");
  auto zero_rank = good;
  zero_rank[3] = 0;
  expect_error(variant("zero_rank", zero_rank), "unsupported IDX rank");
  expect_error(variant("truncated_header", {0, 0, 8, 3, 0, 0}), "truncated IDX header");
  expect_error(variant("tiny", {0, 0}), "too short");
  expect_error(variant("empty", {}), "too short");
  expect_error(variant("truncated_data", std::vector<uint8_t>(good.begin(), good.end() - 5)), "truncated");
  auto trailing = good;
  trailing.push_back(1);
  expect_error(variant("trailing", trailing), "trailing bytes");
  auto zero_dim = good;
  zero_dim[7] = 0;  // dims[0] = 0
  expect_error(variant("zero_dim", zero_dim), "invalid dimension");
  auto huge = good;
  for (int i = 4; i < 12; ++i) huge[i] = 0x7f;  // 2^31-ish x 2^31-ish elements
  expect_error(variant("huge", huge), "too large");
  expect_error(dir.file("does-not-exist"), "cannot open");

  // A gzip file cut short, and one with a corrupted deflate stream.
  idx_write_u8(dir.file("good.gz"), {6, 7}, data);
  auto gz = read_bytes(dir.file("good.gz"));
  expect_error(variant("cut.gz", std::vector<uint8_t>(gz.begin(), gz.begin() + gz.size() / 2)), "gzip");
  auto flipped = gz;
  for (size_t i = 12; i < flipped.size() - 8; ++i) flipped[i] ^= 0x5a;
  expect_error(variant("flipped.gz", flipped), "gzip");
}

TEST(Idx, InstalledFashionMnistHasItsDocumentedShape) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " is not installed";
  auto img = idx_read(dir + "/t10k-images-idx3-ubyte.gz");
  auto lab = idx_read(dir + "/t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(img.dims, (std::vector<int64_t>{10000, 28, 28}));
  EXPECT_EQ(lab.dims, (std::vector<int64_t>{10000}));
  auto counts = torch::bincount(idx_to_tensor(lab).to(torch::kInt64));
  EXPECT_EQ(counts.size(0), 10);
  EXPECT_TRUE(counts.eq(1000).all().item<bool>()) << counts;  // Fashion-MNIST's test set is balanced
}
