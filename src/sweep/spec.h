// Sweep specifications: a base configuration and axes over any config key, expanded into points.
//
//   base: nets/fmnist-expanded.yaml      # a config file (relative to this file), or a mapping inline
//   set: {train.epochs: 1}               # overrides applied to the base (dotted keys)
//   grid: {param.factor: [1, 2, 4], param.depth: [2, 3]}   # cartesian product
//   zip: {model.widths: [[784, 64, 10], [784, 256, 10]], data.batch_size: [64, 256]}  # parallel lists
//   seeds: [0, 1, 2]                     # the `seed` key as one more axis
//
// A value that is a mapping under a section key sets each of its entries, so one axis can vary
// several keys together: zip: {layers.fc2: [{kind: dense}, {kind: expanded, depth: 5}]}.
//
// Points = grid x zip x seeds, in that nesting (the last grid key varies fastest). Each point is a
// fully validated config whose run id (<name>-<hash of the resolved config>) is its identity: the
// same point always maps to the same run file. Every error is a ConfigError naming the sweep file,
// line and key (exit 2), raised before anything runs.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace xpand::sweep {

struct Point {
  size_t index = 0;                                       // position in expansion order
  std::vector<std::pair<std::string, std::string>> axes;  // swept keys and their YAML values
  config::Config cfg;
  std::string run_id;
};

struct Spec {
  std::string path;
  std::vector<std::string> axis_keys;  // grid keys, zip keys, then "seed" when seeds are given
  std::vector<Point> points;
};

// Loads and expands a sweep file. `overrides` ("key=value", e.g. from --set and --out) apply to the
// base before the axes, in every point.
Spec spec_load(const std::string& path, const std::vector<std::string>& overrides = {});

// Whether a YAML file looks like a sweep (top-level grid, zip or seeds) rather than a config.
bool is_sweep_file(const std::string& path);

}  // namespace xpand::sweep
