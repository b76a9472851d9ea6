// Batching and sharding: the shards of ranks 0..R-1 concatenate to the global batch, an epoch visits
// every sample once, batches are pure functions of (seed, step), and chars windows are next-token pairs.
#include <gtest/gtest.h>

#include <fstream>

#include "../test_util.h"
#include "config/config.h"
#include "data/dataset.h"

using namespace xpand;

TEST(Dataset, RankShardsConcatenateToTheGlobalBatch) {
  auto cfg = config::Config::load_string("data: {name: teacher, train_size: 120, test_size: 30}", "d.yaml");
  auto ds = data::dataset_load(cfg, torch::kCPU);
  for (int64_t step : {0, 7, 13}) {
    auto global = ds.train_batch(5, step, 12);
    for (int world : {2, 3, 4}) {
      std::vector<torch::Tensor> xs, ys;
      for (int r = 0; r < world; ++r) {
        auto b = ds.train_batch(5, step, 12, r, world);
        EXPECT_EQ(b.x.size(0), 12 / world);
        xs.push_back(b.x), ys.push_back(b.y);
      }
      EXPECT_TRUE(torch::equal(torch::cat(xs), global.x)) << "step " << step << " world " << world;
      EXPECT_TRUE(torch::equal(torch::cat(ys), global.y));
    }
  }
}

TEST(Dataset, AnEpochVisitsEverySampleOnce) {
  auto cfg = config::Config::load_string("data: {name: teacher, train_size: 120, test_size: 30}", "d.yaml");
  auto ds = data::dataset_load(cfg, torch::kCPU);
  ASSERT_EQ(ds.steps_per_epoch(12), 10);
  for (int64_t epoch : {0, 1}) {
    std::vector<torch::Tensor> xs;
    for (int64_t s = 0; s < 10; ++s) xs.push_back(ds.train_batch(3, epoch * 10 + s, 12).x);
    auto seen = torch::cat(xs);
    // Same rows as the training set, each once: compare sorted first features.
    EXPECT_TRUE(torch::equal(std::get<0>(seen.select(1, 0).sort()), std::get<0>(ds.train_x.select(1, 0).sort())));
  }
  EXPECT_FALSE(torch::equal(ds.train_batch(3, 0, 12).x, ds.train_batch(3, 10, 12).x));  // a new order per epoch
  EXPECT_TRUE(torch::equal(ds.train_batch(3, 4, 12).x, ds.train_batch(3, 4, 12).x));    // pure function of step
  EXPECT_FALSE(torch::equal(ds.train_batch(3, 4, 12).x, ds.train_batch(4, 4, 12).x));   // and of the seed
}

TEST(Dataset, CharsWindowsAreNextTokenPairs) {
  test::TempDir dir;
  std::ofstream(dir.file("t.txt")) << std::string(2000, 'a') + "hello world, this is xpand.\n" + std::string(500, 'b');
  auto cfg =
      config::Config::load_string("data: {name: chars, block_size: 8, root: " + dir.file("t.txt") + "}", "c.yaml");
  auto ds = data::dataset_load(cfg, torch::kCPU);
  EXPECT_EQ(ds.task, data::Task::LanguageModel);
  EXPECT_EQ(ds.num_classes, int64_t(ds.vocab.size()));
  auto b = ds.train_batch(1, 0, 6, 0, 1);
  EXPECT_EQ(b.x.sizes().vec(), (std::vector<int64_t>{6, 8}));
  EXPECT_TRUE(torch::equal(b.x.slice(1, 1), b.y.slice(1, 0, 7)));  // y is x shifted by one
  auto shards = torch::cat({ds.train_batch(1, 0, 6, 0, 2).x, ds.train_batch(1, 0, 6, 1, 2).x});
  EXPECT_TRUE(torch::equal(shards, b.x));
  EXPECT_EQ(ds.train_x.size(0) + ds.test_x.size(0), 2528);  // 90/10 split of every character
}
