// Sweep files expanded into points (src/sweep/spec.h): grid x zip x seeds in the documented nesting
// (the last grid key fastest), mapping values that set several keys, overrides before the axes, and
// every malformed file a ConfigError naming the file, line and key.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "../test_util.h"
#include "core/error.h"
#include "sweep/spec.h"

using xpand::sweep::spec_load;

namespace {

const char* kBase =
    "base:\n"
    "  data: {name: teacher, batch_size: 16, train_size: 64, test_size: 32}\n"
    "  model: {kind: mlp, widths: [32, 8, 10]}\n"
    "  train: {epochs: 0, max_steps: 2}\n";

std::string write(const xpand::test::TempDir& dir, const std::string& text) {
  const std::string path = dir.file("sweep.yaml");
  std::ofstream(path) << text;
  return path;
}

std::string axis(const xpand::sweep::Point& p, const std::string& key) {
  for (const auto& [k, v] : p.axes)
    if (k == key) return v;
  return "<none>";
}

}  // namespace

TEST(SweepSpec, GridZipAndSeedsNestInOrder) {
  xpand::test::TempDir dir;
  auto spec = spec_load(write(dir, std::string(kBase) + "grid: {train.lr: [0.1, 0.01], param.depth: [2, 3]}\n"
                                                        "zip: {param.kind: [dense, expanded], param.factor: [1, 2]}\n"
                                                        "seeds: [0, 7]\n"));
  ASSERT_EQ(spec.points.size(), 2u * 2u * 2u * 2u);
  EXPECT_EQ(spec.axis_keys,
            (std::vector<std::string>{"train.lr", "param.depth", "param.kind", "param.factor", "seed"}));
  // The last grid key varies fastest among the grid keys; zip, then seeds, nest inside the grid.
  EXPECT_EQ(axis(spec.points[0], "train.lr"), "0.1");
  EXPECT_EQ(axis(spec.points[0], "param.depth"), "2");
  std::set<std::string> ids;
  for (size_t i = 0; i < spec.points.size(); ++i) {
    const auto& p = spec.points[i];
    EXPECT_EQ(p.index, i);
    // Zip pairs values, never crosses them.
    EXPECT_EQ(p.cfg.get_string("param.kind") == "dense", p.cfg.get_float("param.factor") == 1.0) << i;
    EXPECT_EQ(std::to_string(p.cfg.get_int("seed")), axis(p, "seed"));
    EXPECT_EQ(std::to_string(p.cfg.get_int("param.depth")), axis(p, "param.depth"));
    ids.insert(p.run_id);
  }
  EXPECT_EQ(ids.size(), spec.points.size());  // every point its own run
  EXPECT_EQ(axis(spec.points[8], "train.lr"), "0.01");
  EXPECT_EQ(axis(spec.points[4], "param.depth"), "3");
}

TEST(SweepSpec, MappingValuesAndOverrides) {
  xpand::test::TempDir dir;
  auto spec =
      spec_load(write(dir, std::string(kBase) + "set: {train.lr: 0.5}\n"
                                                "zip: {layers.fc1: [{kind: dense}, {kind: expanded, depth: 4}]}\n"),
                {"train.max_steps=3"});
  ASSERT_EQ(spec.points.size(), 2u);
  EXPECT_EQ(spec.points[1].cfg.get_string("layers.fc1.kind"), "expanded");
  EXPECT_EQ(spec.points[1].cfg.get_int("layers.fc1.depth"), 4);
  for (const auto& p : spec.points) {
    EXPECT_EQ(p.cfg.get_float("train.lr"), 0.5);
    EXPECT_EQ(p.cfg.get_int("train.max_steps"), 3);
  }
}

TEST(SweepSpec, MalformedFilesNameTheProblem) {
  xpand::test::TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"grid: {train.lr: []}\n", "grid.train.lr: empty list"},
      {"grid: {train.lr: 0.1}\n", "grid.train.lr: expected a list of values"},
      {"zip: {train.lr: [0.1, 0.2], param.depth: [2]}\n", "zip.param.depth"},
      {"seeds: [a]\n", "seeds: 'a' is not an integer"},
      {"grid: {seed: [1, 2]}\nseeds: [0]\n", "seeds: `seed` is already an axis"},
      {"grid: {train.lr: [0.1]}\nzip: {train.lr: [0.2]}\n", "appears in more than one axis"},
      {"sweeps: 3\ngrid: {train.lr: [0.1]}\n", "unknown sweep key"},
      {"set: {train.lr: 1}\n", "no axes"},
      {"grid: {train.nonsense: [1, 2]}\n", "train.nonsense"},
  };
  for (const auto& [text, want] : cases) {
    try {
      spec_load(write(dir, std::string(kBase) + text));
      ADD_FAILURE() << "accepted: " << text;
    } catch (const xpand::ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(want), std::string::npos) << text << " -> " << msg;
      EXPECT_NE(msg.find("sweep.yaml"), std::string::npos) << msg;
    }
  }
  try {
    spec_load(write(dir, "grid: {train.lr: [0.1]}\n"));
    ADD_FAILURE() << "a sweep without base was accepted";
  } catch (const xpand::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("base: missing"), std::string::npos) << e.what();
  }
}
