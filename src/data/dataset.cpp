// Dataset loading, batching and sharding (see dataset.h).
#include "data/dataset.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "data/idx.h"

namespace fs = std::filesystem;

namespace xpand::data {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

at::Generator generator(uint64_t seed, uint64_t stream, uint64_t index) {
  return at::detail::createCPUGenerator(splitmix64(seed ^ splitmix64(stream * 0x100000001b3ull + index)));
}

constexpr uint64_t kStreamEpoch = 1, kStreamWindows = 2, kStreamEval = 3, kStreamTeacher = 4, kStreamAugment = 5;

// --- IDX image datasets ---------------------------------------------------------

std::string find_idx(const fs::path& dir, const std::vector<std::string>& names) {
  for (const auto& n : names)
    for (const char* ext : {"", ".gz"})
      if (fs::exists(dir / (n + ext))) return (dir / (n + ext)).string();
  throw DataError(
      fmt::format("{}: no file named {}[.gz] (an MNIST-style directory holds train-images-idx3-ubyte, "
                  "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte)",
                  dir.string(), names.front()));
}

void load_idx_split(const fs::path& dir, const std::string& prefix, torch::Tensor* x, torch::Tensor* y) {
  std::string img_path = find_idx(dir, {prefix + "-images-idx3-ubyte", prefix + "-images.idx3-ubyte",
                                        prefix + "-images-idx4-ubyte", prefix + "-images.idx4-ubyte"});
  std::string lab_path = find_idx(dir, {prefix + "-labels-idx1-ubyte", prefix + "-labels.idx1-ubyte"});
  IdxArray img = idx_read(img_path), lab = idx_read(lab_path);
  if (img.type != 0x08 || (img.dims.size() != 3 && img.dims.size() != 4))
    throw DataError(
        fmt::format("{}: expected unsigned-byte images of rank 3 (N, H, W) or 4 (N, C, H, W), found type "
                    "0x{:02x} rank {}",
                    img_path, img.type, img.dims.size()));
  if (lab.type != 0x08 || lab.dims.size() != 1)
    throw DataError(fmt::format("{}: expected unsigned-byte labels of rank 1, found type 0x{:02x} rank {}", lab_path,
                                lab.type, lab.dims.size()));
  if (img.dims[0] != lab.dims[0])
    throw DataError(fmt::format("{} has {} images but {} has {} labels", img_path, img.dims[0], lab_path, lab.dims[0]));
  *x = idx_to_tensor(img);  // (N, 1, H, W) or (N, C, H, W) uint8
  if (x->dim() == 3) *x = x->unsqueeze(1);
  *y = idx_to_tensor(lab).to(torch::kInt64);
  int64_t max_label = y->max().item<int64_t>();
  if (max_label >= 256) throw DataError(fmt::format("{}: label {} out of range", lab_path, max_label));
}

// Sets the splits of an image dataset from uint8 images (N, C, H, W) and int64 labels: scaled to
// [0, 1], and with data.normalize standard standardised by the training pixels' mean and std.
void set_images(Dataset* ds, const torch::Tensor& trx, const torch::Tensor& tex, const torch::Tensor& tr_y,
                const torch::Tensor& te_y, const config::Config& cfg) {
  auto train = trx.to(torch::kFloat32).div_(255.0), test = tex.to(torch::kFloat32).div_(255.0);
  if (cfg.get_string("data.normalize") == "standard") {
    // Mean and (unbiased) standard deviation of the training pixels, from their byte histogram in
    // float64: the same values whatever the thread count (a float32 reduction's rounding depends on
    // how it is split), so a run's inputs do not change with `threads`.
    std::vector<double> count(256, 0.0);
    const auto bytes = trx.contiguous();
    const uint8_t* p = bytes.data_ptr<uint8_t>();
    for (int64_t i = 0, n = bytes.numel(); i < n; ++i) count[p[i]] += 1;
    double total = 0, sum = 0, sq = 0;
    for (int v = 0; v < 256; ++v) total += count[v], sum += count[v] * (v / 255.0);
    const double mean = sum / total;
    for (int v = 0; v < 256; ++v) sq += count[v] * (v / 255.0 - mean) * (v / 255.0 - mean);
    const double std = std::sqrt(sq / (total - 1));
    train.sub_(mean).div_(std);
    test.sub_(mean).div_(std);
    ds->input_mean = mean, ds->input_std = std;
  }
  ds->input_div = 255.0;
  ds->train_x = train;
  ds->test_x = test;
  ds->train_y = tr_y;
  ds->test_y = te_y;
  ds->sample_shape = {trx.size(1), trx.size(2), trx.size(3)};
}

void load_images(Dataset* ds, const fs::path& dir, const config::Config& cfg) {
  if (!fs::is_directory(dir))
    throw DataError(
        fmt::format("{}: dataset directory does not exist (data.name {}, data.root)", dir.string(), ds->name));
  torch::Tensor trx, tr_y, tex, te_y;
  load_idx_split(dir, "train", &trx, &tr_y);
  load_idx_split(dir, "t10k", &tex, &te_y);
  if (trx.sizes().slice(1) != tex.sizes().slice(1))
    throw DataError(fmt::format("{}: train images are {} but test images are {}", dir.string(),
                                fmt::join(trx.sizes().slice(1), "x"), fmt::join(tex.sizes().slice(1), "x")));
  set_images(ds, trx, tex, tr_y, te_y, cfg);
  ds->num_classes = std::max(tr_y.max().item<int64_t>(), te_y.max().item<int64_t>()) + 1;
  ds->source = dir.string();
}

// --- CIFAR-10 / CIFAR-100, binary distribution ------------------------------------
// https://www.cs.toronto.edu/~kriz/cifar.html, "binary version": CIFAR-10's data_batch_1.bin ..
// data_batch_5.bin and test_batch.bin hold records of <1 label byte><3072 pixel bytes>; CIFAR-100's
// train.bin and test.bin hold <1 coarse label byte><1 fine label byte><3072 pixel bytes>. The
// pixels are 1024 red, then 1024 green, then 1024 blue bytes, each plane 32 rows of 32.

constexpr int64_t kCifarPixels = 3 * 32 * 32;

// Appends the records of one file: its images (N, 3, 32, 32) uint8 and the label at byte
// `label_at` of each record's `label_bytes` label bytes, checked to lie below `classes`.
void read_cifar_file(const fs::path& path, int64_t label_bytes, int64_t label_at, int64_t classes,
                     std::vector<torch::Tensor>* images, std::vector<torch::Tensor>* labels) {
  if (!fs::is_regular_file(path))
    throw DataError(fmt::format(
        "{}: missing (a CIFAR binary directory holds {}; extract {} from "
        "https://www.cs.toronto.edu/~kriz/cifar.html under data.root or $XPAND_DATA)",
        path.string(),
        label_bytes == 1 ? "data_batch_1.bin .. data_batch_5.bin and test_batch.bin" : "train.bin and test.bin",
        label_bytes == 1 ? "cifar-10-binary.tar.gz" : "cifar-100-binary.tar.gz"));
  const int64_t record = label_bytes + kCifarPixels;
  const auto size = int64_t(fs::file_size(path));
  if (size == 0 || size % record != 0)
    throw DataError(
        fmt::format("{}: {} bytes is not a whole number of {}-byte CIFAR records ({} label byte{} and "
                    "{} pixel bytes each); truncated or not a CIFAR{} binary file",
                    path.string(), size, record, label_bytes, label_bytes == 1 ? "" : "s", kCifarPixels,
                    label_bytes == 1 ? "-10" : "-100"));
  auto bytes = torch::empty({size / record, record}, torch::kUInt8);
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(bytes.data_ptr<uint8_t>()), size))
    throw DataError(fmt::format("{}: read failed after {} of {} bytes", path.string(), in.gcount(), size));
  auto y = bytes.select(1, label_at).to(torch::kInt64);
  const int64_t top = y.max().item<int64_t>();
  if (top >= classes) {
    const int64_t at = y.ge(classes).nonzero().reshape(-1)[0].item<int64_t>();
    throw DataError(fmt::format("{}: record {} has label {}, but there are {} classes (0..{})", path.string(), at,
                                y[at].item<int64_t>(), classes, classes - 1));
  }
  images->push_back(bytes.slice(1, label_bytes).reshape({-1, 3, 32, 32}));
  labels->push_back(y);
}

// data.name cifar10 / cifar100 from `dir`: the extracted directory (cifar-10-batches-bin,
// cifar-100-binary) or the one it was extracted into.
void load_cifar(Dataset* ds, fs::path dir, const config::Config& cfg) {
  const bool hundred = ds->name == "cifar100";
  const char* sub = hundred ? "cifar-100-binary" : "cifar-10-batches-bin";
  if (fs::is_directory(dir / sub)) dir /= sub;
  if (!fs::is_directory(dir))
    throw DataError(
        fmt::format("{}: CIFAR-{} directory does not exist (data.root; the binary version, {}, from "
                    "https://www.cs.toronto.edu/~kriz/cifar.html, extracted)",
                    dir.string(), hundred ? 100 : 10, hundred ? "cifar-100-binary.tar.gz" : "cifar-10-binary.tar.gz"));
  std::vector<torch::Tensor> trx, tr_y, tex, te_y;
  if (hundred) {
    const bool coarse = cfg.get_string("data.cifar100_labels") == "coarse";
    ds->num_classes = coarse ? 20 : 100;
    read_cifar_file(dir / "train.bin", 2, coarse ? 0 : 1, ds->num_classes, &trx, &tr_y);
    read_cifar_file(dir / "test.bin", 2, coarse ? 0 : 1, ds->num_classes, &tex, &te_y);
  } else {
    ds->num_classes = 10;
    for (int i = 1; i <= 5; ++i) read_cifar_file(dir / fmt::format("data_batch_{}.bin", i), 1, 0, 10, &trx, &tr_y);
    read_cifar_file(dir / "test_batch.bin", 1, 0, 10, &tex, &te_y);
  }
  set_images(ds, torch::cat(trx), torch::cat(tex), torch::cat(tr_y), torch::cat(te_y), cfg);
  ds->source = dir.string();
}

// The training batch's data.augment: rows [lo, lo + x.size(0)) of the draws for the whole global batch.
torch::Tensor augment(const Dataset& ds, torch::Tensor x, at::Generator gen, int64_t global_batch, int64_t lo) {
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3), pad = ds.augment_pad;
  auto offsets = torch::randint(0, std::max<int64_t>(1, 2 * pad + 1), {global_batch, 2}, gen, torch::kInt64);
  auto flips = torch::randint(0, 2, {global_batch}, gen, torch::kInt64);
  if (pad >= 0) {
    // Padded with the value a black pixel (raw 0) has after scaling, as a crop of the raw image would be.
    const double black = (0.0 - ds.input_mean) / ds.input_std;
    auto padded = torch::constant_pad_nd(x, {pad, pad, pad, pad}, black);
    auto o = offsets.slice(0, lo, lo + n).contiguous();
    auto a = o.accessor<int64_t, 2>();
    std::vector<torch::Tensor> crops;
    crops.reserve(size_t(n));
    for (int64_t i = 0; i < n; ++i) crops.push_back(padded[i].narrow(1, a[i][0], h).narrow(2, a[i][1], w));
    x = torch::stack(crops);
  }
  if (ds.augment_flip) {
    auto f = flips.slice(0, lo, lo + n).to(torch::kBool).to(x.device()).view({n, 1, 1, 1});
    x = torch::where(f, x.flip({3}), x);
  }
  return x;
}

// --- character-level text ---------------------------------------------------------

// The default corpus: Debian's fortunes, every plain-text cookie file, in name order.
std::vector<fs::path> text_files(const fs::path& root) {
  std::vector<fs::path> files;
  if (fs::is_regular_file(root)) return {root};
  if (!fs::is_directory(root)) throw DataError(fmt::format("{}: text file or directory does not exist", root.string()));
  for (const auto& e : fs::directory_iterator(root)) {
    if (!e.is_regular_file() || e.is_symlink()) continue;
    auto ext = e.path().extension().string();
    if (ext == ".dat" || ext == ".u8" || ext == ".gz") continue;
    files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw DataError(fmt::format("{}: no text files found", root.string()));
  return files;
}

void load_chars(Dataset* ds, const fs::path& root, const config::Config& cfg) {
  std::string text;
  for (const auto& f : text_files(root)) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw DataError(fmt::format("{}: cannot read", f.string()));
    text.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  int64_t block = cfg.get_int("data.block_size");
  double val_fraction = cfg.get_float("data.val_fraction");
  int64_t n_val = static_cast<int64_t>(text.size() * val_fraction);
  int64_t n_train = static_cast<int64_t>(text.size()) - n_val;
  if (n_val < block + 1 || n_train < block + 1)
    throw DataError(fmt::format("{}: {} characters are too few for block_size {} with val_fraction {}", root.string(),
                                text.size(), block, val_fraction));
  std::set<unsigned char> chars(text.begin(), text.end());
  ds->vocab.assign(chars.begin(), chars.end());
  std::vector<int64_t> lut(256, -1);
  for (size_t i = 0; i < ds->vocab.size(); ++i) lut[static_cast<unsigned char>(ds->vocab[i])] = int64_t(i);
  auto tokens = torch::empty({int64_t(text.size())}, torch::kInt64);
  auto* p = tokens.data_ptr<int64_t>();
  for (size_t i = 0; i < text.size(); ++i) p[i] = lut[static_cast<unsigned char>(text[i])];
  ds->task = Task::LanguageModel;
  ds->train_x = tokens.slice(0, 0, n_train).clone();
  ds->test_x = tokens.slice(0, n_train).clone();
  ds->num_classes = int64_t(ds->vocab.size());
  ds->block_size = block;
  ds->sample_shape = {block};
  ds->source = root.string();
}

// --- synthetic teacher ------------------------------------------------------------

void load_teacher(Dataset* ds, uint64_t seed, const config::Config& cfg) {
  int64_t d = cfg.get_int("data.teacher_inputs"), h = cfg.get_int("data.teacher_hidden");
  int64_t k = cfg.get_int("data.teacher_classes");
  int64_t n_train = cfg.get_int("data.train_size"), n_test = cfg.get_int("data.test_size");
  auto gen = generator(seed, kStreamTeacher, 0);
  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  auto w1 = torch::randn({d, h}, gen, opts) / std::sqrt(double(d));
  auto w2 = torch::randn({h, k}, gen, opts) / std::sqrt(double(h));
  auto x = torch::randn({n_train + n_test, d}, gen, opts);
  auto y = torch::tanh(x.mm(w1)).mm(w2).argmax(1);
  ds->train_x = x.slice(0, 0, n_train).clone();
  ds->train_y = y.slice(0, 0, n_train).clone();
  ds->test_x = x.slice(0, n_train).clone();
  ds->test_y = y.slice(0, n_train).clone();
  ds->num_classes = k;
  ds->sample_shape = {d};
  ds->source = fmt::format("teacher(seed={}, inputs={}, hidden={}, classes={})", seed, d, h, k);
}

}  // namespace

std::string data_home() {
  if (const char* e = std::getenv("XPAND_DATA"); e && *e) return e;
  const char* home = std::getenv("HOME");
  return fmt::format("{}/.local/share/xpand", home && *home ? home : "/tmp");
}

Dataset dataset_load(const config::Config& cfg, torch::Device device) {
  Dataset ds;
  ds.name = cfg.get_string("data.name");
  std::string root = cfg.get_string("data.root");
  if (ds.name == "fashion-mnist") {
    load_images(&ds, root.empty() ? "/usr/share/datasets/fashion-mnist" : root, cfg);
  } else if (ds.name == "mnist") {
    if (root.empty())
      cfg.fail("data.root",
               "data.name mnist needs data.root: a directory holding the four MNIST IDX files "
               "(or use data.name mnist-10k, prepared by scripts/setup.sh)");
    load_images(&ds, root, cfg);
  } else if (ds.name == "mnist-10k") {
    std::string dir = root.empty() ? data_home() + "/mnist-10k" : root;
    if (!fs::exists(dir))
      throw DataError(
          fmt::format("{}: mnist-10k is not prepared; run scripts/setup.sh or "
                      "/usr/bin/python3 scripts/mnist10k.py --out {}",
                      dir, dir));
    load_images(&ds, dir, cfg);
  } else if (ds.name == "images") {
    if (root.empty())
      cfg.fail("data.root",
               "data.name images needs data.root: a directory holding train-images-idx{3,4}-ubyte, "
               "train-labels-idx1-ubyte, t10k-images-idx{3,4}-ubyte and t10k-labels-idx1-ubyte (CIFAR-10: "
               "scripts/cifar_idx.py writes them)");
    load_images(&ds, root, cfg);
  } else if (ds.name == "cifar10" || ds.name == "cifar100") {
    load_cifar(&ds, root.empty() ? fs::path(data_home()) : fs::path(root), cfg);
  } else if (ds.name == "chars") {
    load_chars(&ds, root.empty() ? "/usr/share/games/fortunes" : root, cfg);
  } else if (ds.name == "teacher") {
    load_teacher(&ds, static_cast<uint64_t>(cfg.get_int("seed")), cfg);
  } else {
    XPAND_CHECK(false, "dataset '{}' has no loader", ds.name);
  }
  if (const std::string aug = cfg.get_string("data.augment"); aug != "none") {
    if (ds.sample_shape.size() != 3) cfg.fail("data.augment", fmt::format("{} has no images to crop or flip", ds.name));
    if (aug.find("crop") != std::string::npos) ds.augment_pad = cfg.get_int("data.crop_padding");
    ds.augment_flip = aug.find("flip") != std::string::npos;
  }
  // data.train_classes / data.focus_classes: class indices of a classification dataset.
  for (const char* key : {"data.train_classes", "data.focus_classes"}) {
    const auto classes = cfg.get_ints(key);
    if (classes.empty()) continue;
    if (ds.task != Task::Classification)
      cfg.fail(key, fmt::format("{} is language modelling: there are no classes to select", ds.name));
    for (int64_t c : classes)
      if (c >= ds.num_classes)
        cfg.fail(key, fmt::format("class {} does not exist: {} has classes 0..{}", c, ds.name, ds.num_classes - 1));
  }
  if (const auto classes = cfg.get_ints("data.train_classes"); !classes.empty()) {
    auto keep = torch::zeros({ds.num_classes}, torch::kBool);
    for (int64_t c : classes) keep[c] = true;
    auto rows = keep.index_select(0, ds.train_y).nonzero().reshape(-1);
    if (rows.numel() == 0)
      cfg.fail("data.train_classes", fmt::format("no training sample of {} belongs to these classes", ds.name));
    ds.train_x = ds.train_x.index_select(0, rows);
    ds.train_y = ds.train_y.index_select(0, rows);
  }
  for (auto* t : {&ds.train_x, &ds.train_y, &ds.test_x, &ds.test_y})
    if (t->defined()) *t = t->to(device);
  return ds;
}

// --- batching -----------------------------------------------------------------------

int64_t Dataset::train_size() const {
  return task == Task::LanguageModel ? train_x.size(0) - block_size - 1 : train_x.size(0);
}

int64_t Dataset::steps_per_epoch(int64_t global_batch) const {
  if (task == Task::LanguageModel) return std::max<int64_t>(1, train_size() / (global_batch * block_size));
  return train_size() / global_batch;
}

Batch Dataset::train_batch(uint64_t seed, int64_t step, int64_t global_batch, int rank, int world) const {
  XPAND_CHECK(world >= 1 && rank >= 0 && rank < world, "rank {} of {}", rank, world);
  // Shard boundaries floor(r·B/world): shards differ by at most one row when world does not divide B.
  int64_t lo = rank * global_batch / world, local = (rank + 1) * global_batch / world - lo;
  auto dev = train_x.device();
  if (task == Task::LanguageModel) {
    auto gen = generator(seed, kStreamWindows, static_cast<uint64_t>(step));
    auto starts =
        torch::randint(0, train_x.size(0) - block_size, {global_batch}, gen, torch::kInt64).slice(0, lo, lo + local);
    auto idx = (starts.unsqueeze(1) + torch::arange(block_size + 1, torch::kInt64).unsqueeze(0)).to(dev);
    auto w = train_x.index_select(0, idx.reshape(-1)).reshape({local, block_size + 1});
    return {w.slice(1, 0, block_size), w.slice(1, 1, block_size + 1)};
  }
  int64_t spe = steps_per_epoch(global_batch);
  XPAND_CHECK(spe > 0, "global batch {} exceeds the training set ({} samples)", global_batch, train_size());
  int64_t epoch = step / spe, within = step % spe;
  auto& o = epoch_order;
  if (!o.perm.defined() || o.seed != seed || o.epoch != epoch || o.perm.size(0) != train_size() ||
      o.perm.device() != dev) {
    auto gen = generator(seed, kStreamEpoch, static_cast<uint64_t>(epoch));
    o.perm = torch::randperm(train_size(), gen, torch::kInt64).to(dev);
    o.seed = seed, o.epoch = epoch;
  }
  auto idx = o.perm.slice(0, within * global_batch + lo, within * global_batch + lo + local);
  auto x = train_x.index_select(0, idx);
  if (augment_pad >= 0 || augment_flip)
    x = augment(*this, x, generator(seed, kStreamAugment, static_cast<uint64_t>(step)), global_batch, lo);
  return {x, train_y.index_select(0, idx)};
}

std::vector<Batch> Dataset::eval_batches(const std::string& split, int64_t batch_size, int64_t max_samples,
                                         int64_t lm_batches) const {
  const auto& x = split == "train" ? train_x : test_x;
  const auto& y = split == "train" ? train_y : test_y;
  std::vector<Batch> out;
  if (task == Task::LanguageModel) {
    int64_t rows = std::max<int64_t>(1, batch_size / block_size);
    auto gen = generator(0, kStreamEval, split == "train" ? 0 : 1);  // same windows at every evaluation
    for (int64_t b = 0; b < lm_batches; ++b) {
      auto starts = torch::randint(0, x.size(0) - block_size, {rows}, gen, torch::kInt64);
      auto idx = (starts.unsqueeze(1) + torch::arange(block_size + 1, torch::kInt64).unsqueeze(0)).to(x.device());
      auto w = x.index_select(0, idx.reshape(-1)).reshape({rows, block_size + 1});
      out.push_back({w.slice(1, 0, block_size), w.slice(1, 1, block_size + 1)});
    }
    return out;
  }
  int64_t n = x.size(0);
  if (max_samples > 0) n = std::min(n, max_samples);
  for (int64_t i = 0; i < n; i += batch_size) {
    int64_t j = std::min(n, i + batch_size);
    out.push_back({x.slice(0, i, j), y.slice(0, i, j)});
  }
  return out;
}

}  // namespace xpand::data
