// CIFAR-10 / CIFAR-100 in their binary distribution (https://www.cs.toronto.edu/~kriz/cifar.html):
// small files written here byte by byte in that format (label byte(s), then the red, green and
// blue 32x32 planes) are read back pixel for pixel; missing and malformed files are data errors
// naming the file; and data.augment's crops and flips are crops and flips of the padded image, the
// same on 1 rank as on the shards of 2, and a pure function of (seed, step).
#include <gtest/gtest.h>

#include <fstream>

#include "../test_util.h"
#include "config/config.h"
#include "core/error.h"
#include "data/dataset.h"

using namespace xpand;

namespace {

constexpr uint64_t kSeed = 1207;

// The byte of pixel (c, h, w) of record r of file f: a formula, so a reader that swaps planes, rows
// or records reads different values.
uint8_t pixel(int f, int r, int c, int h, int w) { return uint8_t((f * 53 + r * 7 + c * 31 + h * 3 + w * 5) % 256); }

// Writes `records` CIFAR records; `labels` bytes per record from label(r, k).
void write_cifar(const std::string& path, int f, int records, int label_bytes, int (*label)(int f, int r, int k)) {
  std::ofstream out(path, std::ios::binary);
  for (int r = 0; r < records; ++r) {
    for (int k = 0; k < label_bytes; ++k) out.put(char(label(f, r, k)));
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 32; ++h)
        for (int w = 0; w < 32; ++w) out.put(char(pixel(f, r, c, h, w)));
  }
}

int label10(int f, int r, int) { return (f + r) % 10; }
int label100(int f, int r, int k) { return k == 0 ? (f + r) % 20 : (3 * f + 11 * r) % 100; }

// A CIFAR-10 directory: data_batch_1..5 with 3 records each (file ids 1..5), test_batch with 4 (id 6).
void write_cifar10(const test::TempDir& dir) {
  for (int i = 1; i <= 5; ++i) write_cifar(dir.file("data_batch_" + std::to_string(i) + ".bin"), i, 3, 1, label10);
  write_cifar(dir.file("test_batch.bin"), 6, 4, 1, label10);
}

config::Config cifar_config(const std::string& name, const std::string& root, const std::string& extra = "") {
  return config::Config::load_string(
      "data: {name: " + name + ", root: '" + root + "', normalize: unit" + extra + "}\nmodel: {widths: [3072, 10]}",
      "c.yaml");
}

// The images as the bytes they were written from: x · 255, rounded.
torch::Tensor as_bytes(const torch::Tensor& x) { return x.mul(255).round().to(torch::kInt64); }

}  // namespace

TEST(Cifar, Cifar10BinaryIsReadPixelForPixel) {
  test::TempDir dir;
  write_cifar10(dir);
  auto ds = data::dataset_load(cifar_config("cifar10", dir.path()), torch::kCPU);
  EXPECT_EQ(ds.num_classes, 10);
  EXPECT_EQ(ds.sample_shape, (std::vector<int64_t>{3, 32, 32}));
  ASSERT_EQ(ds.train_x.size(0), 15);
  ASSERT_EQ(ds.test_x.size(0), 4);
  EXPECT_EQ(ds.input_div, 255.0);
  auto tr = as_bytes(ds.train_x), te = as_bytes(ds.test_x);
  auto a = tr.accessor<int64_t, 4>(), b = te.accessor<int64_t, 4>();
  int wrong = 0;
  for (int n = 0; n < 15; ++n) {
    const int f = 1 + n / 3, r = n % 3;  // files in order 1..5, records in file order
    EXPECT_EQ(ds.train_y[n].item<int64_t>(), label10(f, r, 0)) << n;
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 32; ++h)
        for (int w = 0; w < 32; ++w) wrong += a[n][c][h][w] != pixel(f, r, c, h, w);
  }
  for (int n = 0; n < 4; ++n) {
    EXPECT_EQ(ds.test_y[n].item<int64_t>(), label10(6, n, 0)) << n;
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 32; ++h)
        for (int w = 0; w < 32; ++w) wrong += b[n][c][h][w] != pixel(6, n, c, h, w);
  }
  EXPECT_EQ(wrong, 0);
  // The extracted tarball's own directory name under data.root is found too.
  test::TempDir parent;
  std::filesystem::create_directory(parent.file("cifar-10-batches-bin"));
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    std::filesystem::copy_file(e.path(), parent.file("cifar-10-batches-bin/" + e.path().filename().string()));
  auto again = data::dataset_load(cifar_config("cifar10", parent.path()), torch::kCPU);
  EXPECT_TRUE(torch::equal(again.train_x, ds.train_x));
}

TEST(Cifar, Cifar100FineAndCoarseLabels) {
  test::TempDir dir;
  write_cifar(dir.file("train.bin"), 1, 5, 2, label100);
  write_cifar(dir.file("test.bin"), 2, 3, 2, label100);
  auto fine = data::dataset_load(cifar_config("cifar100", dir.path()), torch::kCPU);
  auto coarse = data::dataset_load(cifar_config("cifar100", dir.path(), ", cifar100_labels: coarse"), torch::kCPU);
  EXPECT_EQ(fine.num_classes, 100);
  EXPECT_EQ(coarse.num_classes, 20);
  for (int r = 0; r < 5; ++r) {
    EXPECT_EQ(fine.train_y[r].item<int64_t>(), label100(1, r, 1));
    EXPECT_EQ(coarse.train_y[r].item<int64_t>(), label100(1, r, 0));
  }
  for (int r = 0; r < 3; ++r) EXPECT_EQ(fine.test_y[r].item<int64_t>(), label100(2, r, 1));
  auto x = as_bytes(fine.train_x);
  EXPECT_EQ(x[4][2][31][30].item<int64_t>(), pixel(1, 4, 2, 31, 30));  // after two label bytes, not one
  EXPECT_TRUE(torch::equal(fine.train_x, coarse.train_x));
}

TEST(Cifar, MissingAndMalformedFilesNameTheFile) {
  auto error_of = [](const config::Config& cfg) -> std::string {
    try {
      data::dataset_load(cfg, torch::kCPU);
    } catch (const DataError& e) {
      return e.what();
    }
    return "(no error)";
  };
  test::TempDir dir;
  write_cifar10(dir);
  std::filesystem::remove(dir.file("data_batch_4.bin"));
  EXPECT_NE(error_of(cifar_config("cifar10", dir.path())).find("data_batch_4.bin: missing"), std::string::npos);
  write_cifar(dir.file("data_batch_4.bin"), 4, 3, 1, label10);
  std::filesystem::resize_file(dir.file("test_batch.bin"), 3073 * 4 - 100);  // truncated
  auto e = error_of(cifar_config("cifar10", dir.path()));
  EXPECT_NE(e.find("test_batch.bin: 12192 bytes is not a whole number of 3073-byte CIFAR records"), std::string::npos)
      << e;
  write_cifar(dir.file("test_batch.bin"), 6, 4, 1, [](int, int r, int) { return r == 2 ? 10 : 0; });
  e = error_of(cifar_config("cifar10", dir.path()));
  EXPECT_NE(e.find("test_batch.bin: record 2 has label 10, but there are 10 classes"), std::string::npos) << e;
  // A CIFAR-10 file read as CIFAR-100 (3073-byte records): the sizes do not divide.
  test::TempDir hundred;
  write_cifar(hundred.file("train.bin"), 1, 2, 1, label10);
  write_cifar(hundred.file("test.bin"), 1, 2, 2, label100);
  e = error_of(cifar_config("cifar100", hundred.path()));
  EXPECT_NE(e.find("train.bin: 6146 bytes is not a whole number of 3074-byte CIFAR records"), std::string::npos) << e;
  e = error_of(cifar_config("cifar10", dir.path().string() + "/nowhere"));
  EXPECT_NE(e.find("nowhere: CIFAR-10 directory does not exist"), std::string::npos) << e;
}

// Every augmented image is a crop of the zero-padded image (zero: a black pixel after scaling),
// flipped or not; draws cover the global batch so 2 ranks' shards are 1 rank's rows; batches are a
// pure function of (seed, step); and both offsets and flips vary.
TEST(Cifar, AugmentationCropsAndFlipsThePaddedImage) {
  std::printf("seed %llu\n", static_cast<unsigned long long>(kSeed));
  test::TempDir dir;
  write_cifar10(dir);
  auto plain = data::dataset_load(cifar_config("cifar10", dir.path()), torch::kCPU);
  auto cfg = config::Config::load_string("data: {name: cifar10, root: '" + dir.path().string() +
                                             "', augment: crop-flip, crop_padding: 4}\nmodel: {widths: [3072, 10]}",
                                         "c.yaml");
  auto ds = data::dataset_load(cfg, torch::kCPU);  // data.normalize standard: padding is not 0 here
  ASSERT_EQ(ds.augment_pad, 4);
  ASSERT_TRUE(ds.augment_flip);
  const double black = -ds.input_mean / ds.input_std;
  int flipped = 0, shifted = 0, checked = 0;
  for (int64_t step : {0, 1, 2, 7}) {
    auto b = ds.train_batch(kSeed, step, 6);
    auto unaug = plain.train_batch(kSeed, step, 6);  // the same rows, unaugmented (same permutation)
    ASSERT_TRUE(torch::equal(b.y, unaug.y));
    for (int64_t i = 0; i < 6; ++i) {
      // The standardised original, padded by 4 with the black value.
      auto orig = (unaug.x[i] - ds.input_mean) / ds.input_std;
      auto padded = torch::full({3, 40, 40}, black);
      padded.narrow(1, 4, 32).narrow(2, 4, 32).copy_(orig);
      bool found = false;
      for (int dy = 0; dy <= 8 && !found; ++dy)
        for (int dx = 0; dx <= 8 && !found; ++dx)
          for (bool flip : {false, true}) {
            auto crop = padded.narrow(1, dy, 32).narrow(2, dx, 32);
            if (flip) crop = crop.flip({2});
            if (torch::allclose(crop, b.x[i], 1e-6, 1e-6)) {
              found = true;
              flipped += flip;
              shifted += dy != 4 || dx != 4;
              break;
            }
          }
      EXPECT_TRUE(found) << "step " << step << " sample " << i << " is no crop or flip of its padded image";
      ++checked;
    }
    std::vector<torch::Tensor> shards;
    for (int r = 0; r < 2; ++r) shards.push_back(ds.train_batch(kSeed, step, 6, r, 2).x);
    EXPECT_TRUE(torch::equal(torch::cat(shards), b.x)) << "step " << step;
    EXPECT_TRUE(torch::equal(ds.train_batch(kSeed, step, 6).x, b.x));
  }
  EXPECT_EQ(checked, 24);
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, checked);
  EXPECT_GT(shifted, checked / 2);
  // Evaluation never augments.
  EXPECT_TRUE(torch::equal(ds.eval_batches("test", 4, 0, 0).front().x, ds.test_x));
  // Augmentation of something that is not an image is a config error.
  EXPECT_THROW(
      data::dataset_load(config::Config::load_string("data: {name: teacher, augment: flip}", "t.yaml"), torch::kCPU),
      ConfigError);
}
