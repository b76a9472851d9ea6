// Datasets kept whole on the training device (no per-sample loader): IDX images (fashion-mnist,
// mnist, mnist-10k, images), CIFAR-10 / CIFAR-100 in their binary distribution (cifar10, cifar100),
// character-level text (chars) and a seeded synthetic teacher task (teacher).
// Batches are pure functions of (seed, step), so every rank can read its own deterministic shard of
// each global batch and a resumed run sees exactly the batches it would have seen.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace xpand::data {

enum class Task { Classification, LanguageModel };

struct Batch {
  torch::Tensor x;  // images (B, C, H, W) float, features (B, D), or tokens (B, T) int64
  torch::Tensor y;  // class labels (B) int64, or next tokens (B, T) int64
};

struct Dataset {
  std::string name;
  std::string source;  // where it was read from (for provenance)
  Task task = Task::Classification;
  std::vector<int64_t> sample_shape;  // per-sample input shape: {1, 28, 28}, {32}, or {block_size}
  int64_t num_classes = 0;            // classes, or vocabulary size for language modelling
  // How raw inputs become the network's: x = (raw / input_div - input_mean) / input_std, each step
  // in float32 (IDX images: raw bytes, input_div 255; data.normalize standard sets mean and std from
  // the training split). Recorded in run files and exported models.
  double input_div = 1.0, input_mean = 0.0, input_std = 1.0;
  // data.augment (images, training batches only): a random crop of the image zero-padded by
  // augment_pad pixels on every side (-1: no crop), and a horizontal flip with probability 1/2. Drawn
  // per (seed, step) for the whole global batch, so the shards of N ranks are the rows of 1 rank's batch.
  int64_t augment_pad = -1;
  bool augment_flip = false;

  // Classification: whole splits. Language modelling: token streams (train_x / test_x, 1-D int64).
  torch::Tensor train_x, train_y, test_x, test_y;
  int64_t block_size = 0;  // language modelling window
  std::string vocab;       // language modelling: byte value of each token id

  int64_t train_size() const;
  // Steps in one pass over the training set at this global batch (incomplete last batch dropped).
  int64_t steps_per_epoch(int64_t global_batch) const;
  // Rows [floor(rank*B/world), floor((rank+1)*B/world)) of global batch `step` (0-based, counted from the start of
  // training). Classification draws a fresh permutation per epoch, seeded by (seed, epoch).
  Batch train_batch(uint64_t seed, int64_t step, int64_t global_batch, int rank = 0, int world = 1) const;
  // Evaluation batches of one split ("train" or "test"): the whole split in order (capped at
  // max_samples when > 0), or for language modelling `lm_batches` fixed random windows.
  std::vector<Batch> eval_batches(const std::string& split, int64_t batch_size, int64_t max_samples,
                                  int64_t lm_batches) const;

  // The permutation of the epoch drawn last, so the steps of an epoch slice it instead of drawing
  // it again (randperm of 60,000 rows cost more than the optimizer step of a small MLP). Drawn again
  // when what it depends on changes: seed, epoch, the split's size or its device. train_batch is
  // called from one thread.
  struct EpochOrder {
    uint64_t seed = 0;
    int64_t epoch = -1;
    torch::Tensor perm;  // on the split's device
  };
  mutable EpochOrder epoch_order;
};

// Builds the dataset named by data.name, on `device`. Throws DataError / ConfigError.
Dataset dataset_load(const config::Config& cfg, torch::Device device);

// Default location of prepared datasets: $XPAND_DATA, else $HOME/.local/share/xpand.
std::string data_home();

}  // namespace xpand::data
