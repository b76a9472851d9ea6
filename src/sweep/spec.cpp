// Sweep specification loading and expansion (see spec.h).
#include "sweep/spec.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "config/config.h"
#include "config/lookup.h"
#include "core/error.h"
#include "train/trainer.h"

namespace xpand::sweep {

namespace {

namespace fs = std::filesystem;

std::string where(const std::string& path, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  if (m.is_null()) return path;
  return fmt::format("{}:{}:{}", path, m.line + 1, m.column + 1);
}

[[noreturn]] void fail(const std::string& path, const YAML::Node& n, const std::string& key, const std::string& msg) {
  throw ConfigError(fmt::format("{}: {}{}", where(path, n), key.empty() ? "" : key + ": ", msg));
}

std::string emit(const YAML::Node& n) {
  YAML::Emitter out;
  out << YAML::Flow << n;
  return out.c_str();
}

struct Axis {
  std::string key;
  std::vector<YAML::Node> values;
  YAML::Node where;
};

// An axis mapping (grid or zip): key -> non-empty list, keys unique (yaml-cpp keeps duplicates).
std::vector<Axis> read_axes(const std::string& path, const YAML::Node& node, const std::string& section) {
  std::vector<Axis> axes;
  if (!node) return axes;
  if (!node.IsMap()) fail(path, node, section, "expected a mapping of config keys to lists of values");
  std::set<std::string> seen;
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) fail(path, kv.first, section, "axis keys must be dotted config keys");
    const std::string key = kv.first.Scalar();
    if (!seen.insert(key).second) fail(path, kv.first, section + "." + key, "duplicate axis key");
    if (!kv.second.IsSequence()) fail(path, kv.second, section + "." + key, "expected a list of values");
    if (kv.second.size() == 0) fail(path, kv.second, section + "." + key, "empty list: an axis needs values");
    Axis a{key, {}, kv.first};
    for (const auto& v : kv.second) a.values.push_back(v);
    axes.push_back(std::move(a));
  }
  return axes;
}

// "key=value" overrides of one sweep value: a mapping under a section key (layers.fc2: {kind:
// expanded, depth: 5}) sets each of its entries (layers.fc2.kind, layers.fc2.depth), so that one axis
// can vary several keys together, and keys absent from a value keep the base's.
void flatten(const std::string& key, const YAML::Node& v, std::vector<std::string>& out) {
  if (v.IsMap() && v.size() > 0) {
    for (const auto& kv : v) flatten(key + "." + kv.first.Scalar(), kv.second, out);
    return;
  }
  out.push_back(key + "=" + emit(v));
}

YAML::Node load_yaml_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("{}: cannot open sweep file", path));
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return YAML::Load(ss.str());
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}:{}:{}: malformed YAML: {}", path, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
}

// yaml-cpp accepts duplicate keys in a mapping and keeps the first; a sweep refuses them.
void check_duplicates(const std::string& path, const YAML::Node& n, const std::string& prefix) {
  if (!n.IsMap()) return;
  std::set<std::string> seen;
  for (const auto& kv : n) {
    const std::string k = kv.first.IsScalar() ? kv.first.Scalar() : "";
    if (!seen.insert(k).second) fail(path, kv.first, prefix + k, "duplicate key");
    check_duplicates(path, kv.second, prefix + k + ".");
  }
}

}  // namespace

bool is_sweep_file(const std::string& path) {
  try {
    YAML::Node n = load_yaml_file(path);
    return n.IsMap() && (n["grid"] || n["zip"] || n["seeds"] || n["base"]);
  } catch (const std::exception&) {
    return false;
  }
}

Spec spec_load(const std::string& path, const std::vector<std::string>& overrides) {
  Spec spec;
  spec.path = path;
  YAML::Node root = load_yaml_file(path);
  if (!root.IsMap()) fail(path, root, "", "a sweep file is a mapping with base, and grid, zip and/or seeds");
  check_duplicates(path, root, "");
  static const std::set<std::string> known = {"base", "set", "grid", "zip", "seeds"};
  const bool has_base = bool(root["base"]);
  for (const auto& kv : root) {
    const std::string k = kv.first.Scalar();
    auto config_key = [&](const std::string& word) {  // a section (model, train, ...) or top key (seed, name)
      return config::is_section(word) || std::any_of(config::schema().begin(), config::schema().end(),
                                                     [&](const config::KeyDef& d) { return d.key == word; });
    };
    if (!known.count(k) && !has_base && config_key(k))
      fail(path, kv.first, k,
           fmt::format("this is a config file, not a sweep file: train it with `xpand train {}`, or name it as a "
                       "sweep's base",
                       path));
    if (!known.count(k)) fail(path, kv.first, k, "unknown sweep key (accepted: base, set, grid, zip, seeds)");
  }

  // --- the base config, as YAML text with its source name ---
  std::string base_text, base_source;
  const YAML::Node base = root["base"];
  if (!base) fail(path, root, "base", "missing: the config file (or inline mapping) every point starts from");
  if (base.IsScalar()) {
    fs::path p = base.Scalar();
    if (p.is_relative()) p = fs::path(path).parent_path() / p;
    std::ifstream in(p);
    if (!in) fail(path, base, "base", fmt::format("cannot open config file {}", p.string()));
    std::stringstream ss;
    ss << in.rdbuf();
    base_text = ss.str();
    base_source = p.string();
  } else if (base.IsMap()) {
    YAML::Emitter out;
    out << base;
    base_text = out.c_str();
    base_source = where(path, base) + " (base)";
  } else {
    fail(path, base, "base", "expected a config file path or a mapping");
  }

  // --- overrides: set (from the file), then the command line ---
  std::vector<std::string> fixed;
  if (const YAML::Node set = root["set"]) {
    if (!set.IsMap()) fail(path, set, "set", "expected a mapping of dotted config keys to values");
    for (const auto& kv : set) flatten(kv.first.Scalar(), kv.second, fixed);
  }
  for (const auto& o : overrides) fixed.push_back(o);
  try {
    config::Config::load_string(base_text, base_source, fixed);  // the base alone must be valid
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: base: {}", path, e.what()));
  }

  // --- axes ---
  std::vector<Axis> grid = read_axes(path, root["grid"], "grid");
  std::vector<Axis> zip = read_axes(path, root["zip"], "zip");
  for (size_t i = 1; i < zip.size(); ++i)
    if (zip[i].values.size() != zip[0].values.size())
      fail(path, zip[i].where, "zip." + zip[i].key,
           fmt::format("{} values, but zip.{} has {}: zipped lists must have the same length", zip[i].values.size(),
                       zip[0].key, zip[0].values.size()));
  std::vector<YAML::Node> seeds;
  if (const YAML::Node s = root["seeds"]) {
    if (!s.IsSequence() || s.size() == 0) fail(path, s, "seeds", "expected a non-empty list of integers");
    for (const auto& v : s) {
      try {
        v.as<int64_t>();
      } catch (const YAML::Exception&) {
        fail(path, v, "seeds", fmt::format("'{}' is not an integer", emit(v)));
      }
      seeds.push_back(v);
    }
  }
  if (grid.empty() && zip.empty() && seeds.empty())
    fail(path, root, "", "no axes: give grid, zip or seeds (a single run is `xpand train`)");
  std::set<std::string> keys;
  for (const auto* list : {&grid, &zip})
    for (const auto& a : *list) {
      if (!keys.insert(a.key).second) fail(path, a.where, a.key, "appears in more than one axis");
      spec.axis_keys.push_back(a.key);
    }
  if (!seeds.empty()) {
    if (keys.count("seed")) fail(path, root["seeds"], "seeds", "`seed` is already an axis");
    spec.axis_keys.push_back("seed");
  }

  // --- expansion: grid (last key fastest) x zip x seeds ---
  size_t n_grid = 1;
  for (const auto& a : grid) n_grid *= a.values.size();
  const size_t n_zip = zip.empty() ? 1 : zip[0].values.size(), n_seed = seeds.empty() ? 1 : seeds.size();
  const size_t total = n_grid * n_zip * n_seed;
  if (total > 100000) fail(path, root, "", fmt::format("{} points: more than 100000, probably a mistake", total));
  std::map<std::string, size_t> ids;
  for (size_t i = 0; i < total; ++i) {
    Point p;
    p.index = i;
    std::vector<std::pair<const Axis*, const YAML::Node*>> chosen;
    size_t g = i / (n_zip * n_seed);
    std::vector<size_t> gi(grid.size());
    for (size_t k = grid.size(); k-- > 0;) {
      gi[k] = g % grid[k].values.size();
      g /= grid[k].values.size();
    }
    for (size_t k = 0; k < grid.size(); ++k) chosen.push_back({&grid[k], &grid[k].values[gi[k]]});
    const size_t zi = (i / n_seed) % n_zip;
    for (const auto& a : zip) chosen.push_back({&a, &a.values[zi]});
    std::vector<std::string> set = fixed;
    for (const auto& [axis, value] : chosen) {
      p.axes.emplace_back(axis->key, emit(*value));
      flatten(axis->key, *value, set);
    }
    if (!seeds.empty()) {
      const YAML::Node& s = seeds[i % n_seed];
      p.axes.emplace_back("seed", emit(s));
      set.push_back("seed=" + emit(s));
    }
    try {
      p.cfg = config::Config::load_string(base_text, base_source, set);
    } catch (const ConfigError& e) {
      // Name the axis value that made the point invalid, at its place in the sweep file.
      std::string values;
      for (const auto& [k, v] : p.axes) values += fmt::format("{}{}={}", values.empty() ? "" : ", ", k, v);
      const YAML::Node& at = chosen.empty() ? root : *chosen.back().second;
      throw ConfigError(fmt::format("{}: point {} ({}): {}", where(path, at), i, values, e.what()));
    }
    p.run_id = train::run_id(p.cfg);
    auto [it, fresh] = ids.emplace(p.run_id, i);
    if (!fresh)
      throw ConfigError(
          fmt::format("{}: points {} and {} resolve to the same configuration (run {}): an axis "
                      "repeats a value or sets a key to its default (device, threads and the operational keys "
                      "train.log_every, dist.* are not part of a run's identity: sweep them into separate --out "
                      "directories)",
                      path, it->second, i, p.run_id));
    spec.points.push_back(std::move(p));
  }
  return spec;
}

}  // namespace xpand::sweep
