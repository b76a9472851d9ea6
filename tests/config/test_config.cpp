// Config validation: values, defaults and overrides; each kind of error names the key, the
// source and line, and the accepted values; the schema's choices match the registries.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <sstream>

#include "config/config.h"
#include "core/error.h"
#include "param/param.h"

using xpand::ConfigError;
using xpand::config::Config;

namespace {

// Loads YAML expecting a ConfigError whose message contains every needle.
void expect_error(const std::string& yaml, const std::vector<std::string>& needles,
                  const std::vector<std::string>& overrides = {}) {
  try {
    Config::load_string(yaml, "test.yaml", overrides);
    FAIL() << "no error for:\n" << yaml;
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
  }
}

}  // namespace

TEST(Config, ValuesDefaultsAndOverrides) {
  auto cfg = Config::load_string(
      "name: demo\nseed: 7\ntrain:\n  lr: 3e-4\n  optimizer: sgd\n  momentum: 0.9\nmodel:\n  widths: [784, 10]\n",
      "demo.yaml", {"train.epochs=3", "data.batch_size=32", "model.activation=tanh"});
  EXPECT_EQ(cfg.get_string("name"), "demo");
  EXPECT_EQ(cfg.get_int("seed"), 7);
  EXPECT_DOUBLE_EQ(cfg.get_float("train.lr"), 3e-4);
  EXPECT_DOUBLE_EQ(cfg.get_float("train.momentum"), 0.9);
  EXPECT_FALSE(cfg.get_bool("train.nesterov"));  // default of an applicable conditional key
  EXPECT_FALSE(cfg.has("train.beta1"));          // adam-only key absent under sgd
  EXPECT_EQ(cfg.get_ints("model.widths"), (std::vector<int64_t>{784, 10}));
  EXPECT_DOUBLE_EQ(cfg.get_float("train.epochs"), 3.0);  // an integer is a valid float
  EXPECT_EQ(cfg.get_int("data.batch_size"), 32);
  EXPECT_EQ(cfg.get_string("model.activation"), "tanh");
  EXPECT_EQ(cfg.get_string("data.name"), "fashion-mnist");  // unconditional default
  EXPECT_EQ(cfg.location("train.lr").line, 4);
  EXPECT_EQ(cfg.location("train.lr").source, "demo.yaml");
}

// Keys added after run ids were in use (config::key_added: param.width_of, model.bias_init, ...)
// count toward the id only away from their defaults, so earlier configurations keep their ids, and
// so does the resolved YAML that lists them. The id is the FNV-1a hash of the resolved YAML without
// those keys, recomputed here from to_yaml's text with the keys' lines taken out.
TEST(Config, KeysAddedLaterLeaveRunIdsAlone) {
  auto a = Config::load_string("model: {kind: mlp, widths: [4, 3]}\ndata: {name: teacher}", "a.yaml");
  auto b = Config::load_string(
      "model: {kind: mlp, widths: [4, 3], bias_init: default}\ndata: {name: teacher}\n"
      "param: {width_of: max, residual_intervals: [2], init_std: 0.01, nonlinear: false, expand_input: true}",
      "b.yaml");
  EXPECT_EQ(a.hash(), b.hash());
  auto c = Config::load_string("model: {kind: mlp, widths: [4, 3], bias_init: zero}\ndata: {name: teacher}", "c.yaml");
  EXPECT_NE(a.hash(), c.hash());
  auto d = Config::load_string("model: {kind: mlp, widths: [4, 3]}\ndata: {name: teacher}\nparam: {width_of: out}",
                               "d.yaml");
  EXPECT_NE(a.hash(), d.hash());
  auto cnn = Config::load_string("model: {kind: cnn}", "cnn.yaml");
  EXPECT_EQ(cnn.hash(), Config::load_string("model: {kind: cnn, padding: same}", "cnn.yaml").hash());
  // data.augment and train.distill.* at their defaults keep the ids of runs made before them.
  EXPECT_NE(a.hash(), Config::load_string("model: {kind: mlp, widths: [4, 3]}\ndata: {name: teacher}\n"
                                          "train: {distill: {alpha: 0.5}}",
                                          "e.yaml")
                          .hash());
  EXPECT_NE(cnn.hash(), Config::load_string("model: {kind: cnn, padding: valid}", "cnn.yaml").hash());
  uint64_t h = 1469598103934665603ull;
  std::istringstream lines(a.to_yaml("output."));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("device:", 0) == 0 || line.rfind("threads:", 0) == 0) continue;
    bool added = false;
    for (const char* k : {"  bias_init:", "  layer_bias:", "  width_of:", "  residual_intervals:", "  batch_norm_at:",
                          "  negative_slope:", "  first_bias:", "  init_std:", "  nonlinear:", "  expand_input:",
                          "  augment:", "  crop_padding:", "  distill:", "    from:", "    temperature:", "    alpha:",
                          "  link_gbps:", "  latency_us:", "  gemm_gflops:"})
      added |= line.rfind(k, 0) == 0;
    if (added) continue;
    for (unsigned char ch : line) h = (h ^ ch) * 1099511628211ull;
    h = (h ^ '\n') * 1099511628211ull;
  }
  EXPECT_EQ(a.hash(), fmt::format("{:016x}", h));
}

// Operational keys (config/operational.h) leave the run id alone; a key that defines the experiment
// right beside them does not.
TEST(Config, OperationalKeysKeepTheRunId) {
  auto a = Config::load_string("model: {kind: mlp, widths: [4, 3]}\ndata: {name: teacher}", "a.yaml");
  for (const char* o : {"train.log_every=7", "dist.timeout_s=999", "dist.bucket_mb=1", "dist.first_bucket_mb=0.5",
                        "dist.backend=mpi", "dist.link_gbps=50", "dist.latency_us=5", "dist.gemm_gflops=100"}) {
    auto b = Config::load_string("model: {kind: mlp, widths: [4, 3]}\ndata: {name: teacher}", "a.yaml", {o});
    EXPECT_NE(a.to_yaml(), b.to_yaml()) << o;  // the value did change
    EXPECT_EQ(a.hash(), b.hash()) << o;
  }
  for (const char* o : {"train.eval_every=7", "data.batch_size=17", "train.max_steps=5", "data.eval_batch_size=17"})
    EXPECT_NE(a.hash(),
              Config::load_string("model: {kind: mlp, widths: [4, 3]}\ndata: {name: teacher}", "a.yaml", {o}).hash())
        << o;
}

TEST(Config, ResolvedYamlReloadsToTheSameConfig) {
  auto a = Config::load_string(
      "train: {lr: 0.1, schedule: cosine, lr_min: 0.001}\nmodel: {kind: gpt}\ndata: {name: chars}", "a.yaml");
  auto b = Config::load_string(a.to_yaml(), "resolved.yaml");
  EXPECT_EQ(a.to_yaml(), b.to_yaml());
  EXPECT_EQ(a.hash(), b.hash());
  EXPECT_EQ(a.keys(), b.keys());
  // Where results go does not change the run's identity; what is trained does.
  auto c = Config::load_string(a.to_yaml(), "resolved.yaml", {"output.dir=/elsewhere"});
  EXPECT_EQ(a.hash(), c.hash());
  auto d = Config::load_string(a.to_yaml(), "resolved.yaml", {"train.lr=0.2"});
  EXPECT_NE(a.hash(), d.hash());
  // Nor where it trains: the same point on CPUs and on GPUs, with any thread count, is one run.
  auto e = Config::load_string(a.to_yaml(), "resolved.yaml", {"device=auto", "threads=3"});
  EXPECT_EQ(a.hash(), e.hash());
  // A nested key named like them still counts.
  auto f = Config::load_string(a.to_yaml(), "resolved.yaml", {"model.n_head=4"});
  EXPECT_NE(a.hash(), f.hash());
}

// Several layers with several fields each (the lowrank preset's points): every layer's section
// appears once in the resolved YAML, which reloads to the same keys and values.
TEST(Config, ResolvedYamlNestsEachLayerOnce) {
  auto a = Config::load_string(
      "model: {widths: [784, 64, 32, 10]}\n"
      "layers: {fc1: {kind: lowrank, rank: 10}, fc2: {kind: lowrank, rank: 8}}\n",
      "a.yaml");
  const std::string y = a.to_yaml();
  EXPECT_NE(y.find("layers:\n  fc1:\n    kind: lowrank\n    rank: 10\n  fc2:\n    kind: lowrank\n    rank: 8\n"),
            std::string::npos)
      << y;
  auto b = Config::load_string(y, "resolved.yaml");
  EXPECT_EQ(a.keys(), b.keys());
  EXPECT_EQ(b.get_string("layers.fc1.kind"), "lowrank");
  EXPECT_EQ(b.get_int("layers.fc2.rank"), 8);
  EXPECT_EQ(a.hash(), b.hash());
}

TEST(Config, UnknownKeysNameLineAndSuggestion) {
  expect_error("name: x\ntrain:\n  lrr: 0.1\n",
               {"test.yaml:3:", "train.lrr", "unknown key", "did you mean 'train.lr'"});
  expect_error("bogus: 1\n", {"test.yaml:1:", "bogus", "unknown key"});
  expect_error("train: 5\n", {"train", "is a section"});
  expect_error("name: x\n", {"--set", "train.nope", "unknown key"}, {"train.nope=1"});
  expect_error("name: x\n", {"KEY=VALUE"}, {"train.lr"});
}

TEST(Config, WrongTypesNameTheExpectedType) {
  expect_error("seed: abc\n", {"test.yaml:1:", "seed", "expected integer", "'abc'"});
  expect_error("seed: 1.5\n", {"seed", "expected integer"});
  expect_error("train:\n  lr: [1, 2]\n", {"test.yaml:2:", "train.lr", "expected float", "a list"});
  expect_error("model:\n  widths: 784\n", {"model.widths", "expected list of integers"});
  expect_error("model:\n  widths: [784, x, 10]\n", {"model.widths", "element 'x'"});
  expect_error("model:\n  bias: maybe\n", {"model.bias", "expected bool"});
  expect_error("train:\n  lr:\n", {"train.lr", "has no value"});
  expect_error("name: x\n", {"--set seed=a", "seed", "expected integer"}, {"seed=a"});
}

TEST(Config, OutOfRangeValuesNameTheRange) {
  expect_error("train:\n  lr: -0.1\n", {"test.yaml:2:", "train.lr", "out of range", "> 0"});
  expect_error("train:\n  lr: 0\n", {"train.lr", "> 0"});
  expect_error("data:\n  batch_size: 0\n", {"data.batch_size", ">= 1"});
  expect_error("model:\n  kind: gpt\n  dropout: 1.5\ndata: {name: chars}\n", {"model.dropout", "<= 1"});
  expect_error("model:\n  widths: [784, -3, 10]\n", {"model.widths", "-3", "out of range"});
  expect_error("train:\n  lr: .nan\n", {"train.lr", "out of range"});
}

TEST(Config, EnumsListTheAcceptedValues) {
  expect_error("train:\n  optimizer: adan\n", {"test.yaml:2:", "train.optimizer", "'adan'", "sgd, adam, adamw"});
  expect_error("data:\n  name: cifar\n", {"data.name", "fashion-mnist", "teacher"});
  expect_error("param:\n  kind: magic\n", {"param.kind", "dense"});
}

TEST(Config, KeysThatDoNotApplyAreRejected) {
  expect_error("model:\n  kind: mlp\n  n_head: 4\n",
               {"test.yaml:3:", "model.n_head", "only when model.kind is gpt", "'mlp'"});
  expect_error("train:\n  optimizer: adam\n  momentum: 0.9\n", {"train.momentum", "only when train.optimizer is sgd"});
  // ...but becomes valid when the override switches the condition.
  EXPECT_NO_THROW(
      Config::load_string("train:\n  optimizer: adam\n  momentum: 0.9\n", "t.yaml", {"train.optimizer=sgd"}));
}

TEST(Config, MalformedYamlAndDuplicates) {
  expect_error("train:\n  lr: 0.1\n   bad: [\n", {"test.yaml:", "malformed YAML"});
  expect_error("train:\n  lr: 0.1\n  lr: 0.2\n", {"test.yaml:3:", "train.lr", "duplicate key"});
  expect_error("- a\n- b\n", {"expected a mapping"});
  EXPECT_NO_THROW(Config::load_string("", "empty.yaml"));  // an empty file is all defaults
}

TEST(Config, EveryDefaultIsValidForEveryVariant) {
  for (const char* variant : {"model: {kind: mlp}", "model: {kind: cnn}", "model: {kind: gpt}\ndata: {name: chars}",
                              "train: {optimizer: sgd, schedule: step}", "train: {optimizer: adamw, schedule: cosine}",
                              "data: {name: teacher}"})
    EXPECT_NO_THROW(Config::load_string(variant, "variant.yaml")) << variant;
}

TEST(Config, SchemaChoicesMatchTheParameterizationRegistry) {
  for (const auto& d : xpand::config::schema())
    if (d.key == "param.kind") EXPECT_EQ(d.choices, xpand::param::kind_names());
}
