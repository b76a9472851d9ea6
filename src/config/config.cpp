// YAML → validated Config (see config.h). The loader walks the YAML tree, maps every leaf to a
// schema key, converts and range-checks it, then applies --set overrides, defaults and the
// "applies only when" conditions. Every error names the location and the accepted values.
#include "config/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "config/lookup.h"
#include "config/operational.h"
#include "core/error.h"
#include "core/log.h"

namespace xpand::config {

// --- small helpers -------------------------------------------------------------

const char* type_name(Type t) {
  switch (t) {
    case Type::Int:
      return "integer";
    case Type::Float:
      return "float";
    case Type::Bool:
      return "bool";
    case Type::String:
      return "string";
    case Type::IntList:
      return "list of integers";
    case Type::FloatList:
      return "list of floats";
    case Type::StringList:
      return "list of strings";
  }
  return "?";
}

std::string Location::str() const {
  if (line > 0) return fmt::format("{}:{}:{}", source, line, column);
  return source;
}

std::string describe_accepted(const KeyDef& d) {
  std::string s = type_name(d.type);
  if (!d.choices.empty()) s += fmt::format(", one of: {}", fmt::join(d.choices, ", "));
  bool has_min = std::isfinite(d.min), has_max = std::isfinite(d.max);
  auto num = [](double v) { return fmt::format("{:g}", v); };
  if (has_min && has_max)
    s += fmt::format(", {} {} and <= {}", d.min_open ? ">" : ">=", num(d.min), num(d.max));
  else if (has_min)
    s += fmt::format(", {} {}", d.min_open ? ">" : ">=", num(d.min));
  else if (has_max)
    s += fmt::format(", <= {}", num(d.max));
  return s;
}

namespace {

std::vector<std::string> split_key(const std::string& k) {
  std::vector<std::string> parts;
  size_t i = 0, j;
  while ((j = k.find('.', i)) != std::string::npos) parts.push_back(k.substr(i, j - i)), i = j + 1;
  parts.push_back(k.substr(i));
  return parts;
}

// Whether the first pattern.size() segments of `key` match `pattern` ("*" matches one name).
bool prefix_match(const std::vector<std::string>& pattern, const std::vector<std::string>& key) {
  if (key.size() < pattern.size()) return false;
  for (size_t i = 0; i < pattern.size(); ++i)
    if (key[i].empty() || (pattern[i] != "*" && pattern[i] != key[i])) return false;
  return true;
}

// Full match; a "*" segment matches one or more names, so "layers.*.kind" accepts the layer
// pattern "h0.mlp.c_fc" (which contains dots) as well as "fc1".
bool glob_segments(const std::vector<std::string>& p, size_t i, const std::vector<std::string>& k, size_t j) {
  if (i == p.size()) return j == k.size();
  if (p[i] == "*") {
    for (size_t n = 1; j + n <= k.size(); ++n)
      if (glob_segments(p, i + 1, k, j + n)) return true;
    return false;
  }
  return j < k.size() && !k[j].empty() && p[i] == k[j] && glob_segments(p, i + 1, k, j + 1);
}

bool segment_match(const std::string& pattern, const std::string& key) {
  return glob_segments(split_key(pattern), 0, split_key(key), 0);
}

// Sections of a key for YAML output: "layers.<layer pattern>.<field>" keeps the pattern whole.
std::vector<std::string> key_sections(const std::string& key) {
  const std::string layers = "layers.";
  if (key.compare(0, layers.size(), layers) == 0) {
    size_t last = key.rfind('.');
    return {"layers", key.substr(layers.size(), last - layers.size()), key.substr(last + 1)};
  }
  return split_key(key);
}

const KeyDef* find_def(const std::string& key) {
  for (const auto& d : schema())
    if (segment_match(d.key, key)) return &d;
  return nullptr;
}

}  // namespace

bool is_section(const std::string& prefix) {
  auto p = split_key(prefix);
  for (const auto& d : schema()) {
    auto s = split_key(d.key);
    if (s.size() > p.size() && prefix_match(std::vector<std::string>(s.begin(), s.begin() + p.size()), p)) return true;
  }
  return false;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

namespace {

std::string suggestion(const std::string& key) {
  const KeyDef* best = nullptr;
  size_t best_d = 4;
  for (const auto& d : schema()) {
    size_t dist = edit_distance(key, d.key);
    if (dist < best_d) best_d = dist, best = &d;
  }
  return best ? fmt::format(" (did you mean '{}'?)", best->key) : std::string();
}

Location loc_of(const YAML::Node& n, const std::string& source) {
  Location l;
  l.source = source;
  YAML::Mark m = n.Mark();
  if (!m.is_null()) l.line = m.line + 1, l.column = m.column + 1;
  return l;
}

[[noreturn]] void fail_at(const Location& l, const std::string& key, const std::string& msg) {
  throw ConfigError(fmt::format("{}: {}: {}", l.str(), key, msg));
}

std::string scalar_text(const YAML::Node& n) { return n.IsScalar() ? n.Scalar() : "<non-scalar>"; }

bool parse_int(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  size_t pos = 0;
  try {
    long long v = std::stoll(s, &pos, 10);
    if (pos != s.size()) return false;
    *out = v;
    return true;
  } catch (...) {
    return false;
  }
}

bool parse_float(const std::string& s, double* out) {
  if (s.empty()) return false;
  std::string t = s;
  std::transform(t.begin(), t.end(), t.begin(), ::tolower);
  if (t == ".inf" || t == "+.inf") return *out = INFINITY, true;
  if (t == "-.inf") return *out = -INFINITY, true;
  if (t == ".nan") return *out = NAN, true;
  size_t pos = 0;
  try {
    double v = std::stod(s, &pos);
    if (pos != s.size()) return false;
    *out = v;
    return true;
  } catch (...) {
    return false;
  }
}

void check_number(const KeyDef& d, double v, const Location& l, const std::string& key, const std::string& text) {
  bool low = d.min_open ? !(v > d.min) : !(v >= d.min);
  if (!std::isfinite(v) || low || v > d.max)
    fail_at(l, key, fmt::format("value {} is out of range (accepted: {})", text, describe_accepted(d)));
}

void check_choice(const KeyDef& d, const std::string& v, const Location& l, const std::string& key) {
  if (!d.choices.empty() && std::find(d.choices.begin(), d.choices.end(), v) == d.choices.end())
    fail_at(l, key, fmt::format("'{}' is not accepted (accepted: {})", v, describe_accepted(d)));
}

// Converts one YAML node into a typed value of the key's type, checking ranges and choices.
Value convert(const KeyDef& d, const YAML::Node& n, const Location& l, const std::string& key) {
  auto wrong = [&](const std::string& got) -> Value {
    fail_at(l, key, fmt::format("expected {}, got {} (accepted: {})", type_name(d.type), got, describe_accepted(d)));
  };
  bool is_list = d.type == Type::IntList || d.type == Type::FloatList || d.type == Type::StringList;
  if (!n.IsDefined() || n.IsNull()) fail_at(l, key, fmt::format("has no value (accepted: {})", describe_accepted(d)));
  if (is_list) {
    if (!n.IsSequence()) return wrong(n.IsMap() ? "a mapping" : fmt::format("'{}'", scalar_text(n)));
    std::vector<int64_t> ints;
    std::vector<double> floats;
    std::vector<std::string> strings;
    for (const auto& el : n) {
      Location el_loc = loc_of(el, l.source);
      if (el_loc.line == 0) el_loc = l;
      if (!el.IsScalar()) return wrong("a list with a non-scalar element");
      const std::string& s = el.Scalar();
      if (d.type == Type::IntList) {
        int64_t v;
        if (!parse_int(s, &v)) return wrong(fmt::format("element '{}'", s));
        check_number(d, double(v), el_loc, key, s);
        ints.push_back(v);
      } else if (d.type == Type::FloatList) {
        double v;
        if (!parse_float(s, &v)) return wrong(fmt::format("element '{}'", s));
        check_number(d, v, el_loc, key, s);
        floats.push_back(v);
      } else {
        check_choice(d, s, el_loc, key);
        strings.push_back(s);
      }
    }
    if (d.type == Type::IntList) return ints;
    if (d.type == Type::FloatList) return floats;
    return strings;
  }
  if (!n.IsScalar()) return wrong(n.IsMap() ? "a mapping" : "a list");
  const std::string& s = n.Scalar();
  switch (d.type) {
    case Type::Int: {
      int64_t v;
      if (!parse_int(s, &v)) return wrong(fmt::format("'{}'", s));
      check_number(d, double(v), l, key, s);
      return v;
    }
    case Type::Float: {
      double v;
      if (!parse_float(s, &v)) return wrong(fmt::format("'{}'", s));
      check_number(d, v, l, key, s);
      return v;
    }
    case Type::Bool: {
      if (s == "true" || s == "True" || s == "yes" || s == "on") return true;
      if (s == "false" || s == "False" || s == "no" || s == "off") return false;
      return wrong(fmt::format("'{}'", s));
    }
    case Type::String:
      check_choice(d, s, l, key);
      return s;
    default:
      break;
  }
  return wrong("?");
}

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    Location l{source, e.mark.is_null() ? 0 : e.mark.line + 1, e.mark.is_null() ? 0 : e.mark.column + 1};
    throw ConfigError(fmt::format("{}: malformed YAML: {}", l.str(), e.msg));
  }
}

}  // namespace

// --- loading ---------------------------------------------------------------------

class Loader {
 public:
  Loader(Config* cfg, std::string source) : cfg_(cfg), source_(std::move(source)) {}

  void walk(const YAML::Node& node, const std::string& prefix) {
    if (!node.IsMap()) {
      Location l = loc_of(node, source_);
      if (prefix.empty() && (node.IsNull() || !node.IsDefined())) return;  // empty file
      throw ConfigError(
          fmt::format("{}: {}: expected a mapping of keys", l.str(), prefix.empty() ? "<top level>" : prefix));
    }
    std::set<std::string> seen;
    for (const auto& kv : node) {
      Location l = loc_of(kv.first, source_);
      if (!kv.first.IsScalar()) throw ConfigError(fmt::format("{}: keys must be plain names", l.str()));
      std::string name = kv.first.Scalar();
      std::string key = prefix.empty() ? name : prefix + "." + name;
      // Under `layers:` a key is a layer name or glob pattern, which may contain dots (h0.mlp.c_fc).
      const bool layer_pattern = prefix == "layers";
      if (name.empty() || (!layer_pattern && name.find('.') != std::string::npos))
        fail_at(l, key, "key names must be non-empty and contain no '.'");
      if (!seen.insert(name).second) fail_at(l, key, "duplicate key");
      if (layer_pattern) {
        if (!kv.second.IsMap())
          fail_at(l, key, "expected a mapping of parameterization keys for this layer (e.g. kind: expanded)");
        walk(kv.second, key);
        continue;
      }
      const KeyDef* def = find_def(key);
      if (def) {
        Location vl = loc_of(kv.second, source_);
        if (vl.line == 0 || kv.second.IsNull()) vl = l;  // a null value carries the next token's mark
        cfg_->set(key, Config::Entry{convert(*def, kv.second, vl, key), vl, def});
      } else if (is_section(key)) {
        if (!kv.second.IsMap()) fail_at(l, key, "is a section: expected a mapping of keys below it");
        walk(kv.second, key);
      } else {
        fail_at(l, key, fmt::format("unknown key{}; `xpand keys` lists every accepted key", suggestion(key)));
      }
    }
  }

  void apply_override(const std::string& text) {
    Location l{"--set " + text, 0, 0};
    size_t eq = text.find('=');
    if (eq == std::string::npos || eq == 0)
      throw ConfigError(fmt::format("{}: expected KEY=VALUE with a dotted key, e.g. train.lr=0.01", l.str()));
    std::string key = text.substr(0, eq), value = text.substr(eq + 1);
    const KeyDef* def = find_def(key);
    if (!def && is_section(key)) fail_at(l, key, "is a section: --set takes a full dotted key, e.g. train.lr=0.01");
    if (!def) fail_at(l, key, fmt::format("unknown key{}; `xpand keys` lists every accepted key", suggestion(key)));
    YAML::Node n = parse_yaml(value, l.source);
    // Strings stay verbatim (--set name=007 is "007", not 7), unless quoted in YAML's way
    // (--set name='"x"' or name="'x'" from a shell): then their quotes go, as in a config file.
    if (def->type == Type::String && n.IsScalar() && n.Tag() != "!") n = YAML::Node(value);
    cfg_->set(key, Config::Entry{convert(*def, n, l, key), l, def});
  }

 private:
  Config* cfg_;
  std::string source_;
};

void Config::set(const std::string& key, Entry e) {
  if (!values_.count(key)) order_.push_back(key);
  values_[key] = std::move(e);
}

Config Config::load_file(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("{}: cannot open config file", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (const YAML::Node root = parse_yaml(ss.str(), path);
      !root.IsDefined() || root.IsNull() || (root.IsMap() && root.size() == 0))
    log::warn("{}: the config file is empty: every key takes its default (`xpand keys` lists them)", path);
  return load_string(ss.str(), path, overrides);
}

Config Config::load_string(const std::string& text, const std::string& source,
                           const std::vector<std::string>& overrides) {
  Config cfg;
  Loader loader(&cfg, source);
  loader.walk(parse_yaml(text, source), "");
  for (const auto& o : overrides) loader.apply_override(o);
  cfg.apply_defaults_and_check();
  return cfg;
}

// The run name becomes part of file names (<out>/runs/<name>-<hash>.h5, its checkpoint and lock):
// letters, digits and . _ + - only, starting with a letter, digit or _, at most kMaxRunName
// characters, so that it can neither leave the output directory nor make a path too long.
void Config::check_run_name() const {
  auto it = values_.find("name");
  if (it == values_.end()) return;
  const auto* v = std::get_if<std::string>(&it->second.value);
  if (v == nullptr) return;
  const std::string& name = *v;
  constexpr size_t kMaxRunName = 100;
  auto ok_char = [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '_' || c == '+' || c == '-'; };
  std::string why;
  if (name.empty())
    why = "is empty";
  else if (name.size() > kMaxRunName)
    why = fmt::format("is {} characters long (at most {})", name.size(), kMaxRunName);
  else if (!std::all_of(name.begin(), name.end(), ok_char))
    why = "may hold only letters, digits and . _ + - (it names files: <out>/runs/<name>-<hash>.h5)";
  else if (!(std::isalnum(static_cast<unsigned char>(name[0])) || name[0] == '_'))
    why = "must start with a letter, a digit or '_'";
  if (!why.empty()) fail_at(it->second.loc, "name", fmt::format("'{}' {}", name, why));
}

void Config::apply_defaults_and_check() {
  // Defaults first for unconditional keys (conditions may refer to them), then conditional ones.
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& d : schema()) {
      if ((pass == 0) != d.when_key.empty()) continue;
      if (d.key.find('*') != std::string::npos || d.default_yaml.empty() || values_.count(d.key)) continue;
      if (!d.when_key.empty()) {
        auto it = values_.find(d.when_key);
        if (it == values_.end()) continue;
        const auto* v = std::get_if<std::string>(&it->second.value);
        if (!v || std::find(d.when_values.begin(), d.when_values.end(), *v) == d.when_values.end()) continue;
      }
      Location l{"<default>", 0, 0};
      set(d.key, Entry{convert(d, YAML::Load(d.default_yaml), l, d.key), l, &d});
    }
  }
  check_run_name();
  // A key set explicitly whose condition does not hold is a mistake: say so.
  for (const auto& [key, e] : values_) {
    const KeyDef& d = *e.def;
    if (d.when_key.empty()) continue;
    auto it = values_.find(d.when_key);
    std::string cur = it == values_.end() ? "<unset>" : std::get<std::string>(it->second.value);
    if (std::find(d.when_values.begin(), d.when_values.end(), cur) == d.when_values.end())
      fail_at(e.loc, key,
              fmt::format("applies only when {} is {} (here it is '{}')", d.when_key, fmt::join(d.when_values, " or "),
                          cur));
  }
}

// --- access ------------------------------------------------------------------------

const Config::Entry& Config::entry(const std::string& key, Type expected) const {
  auto it = values_.find(key);
  if (it == values_.end()) {
    const KeyDef* d = find_def(key);
    XPAND_CHECK(d != nullptr, "config key '{}' is not in the schema", key);
    throw ConfigError(fmt::format("{}: required key is not set (accepted: {})", key, describe_accepted(*d)));
  }
  XPAND_CHECK(it->second.def->type == expected, "config key '{}' read as {} but declared {}", key, type_name(expected),
              type_name(it->second.def->type));
  return it->second;
}

bool Config::has(const std::string& key) const { return values_.count(key) > 0; }

bool Config::at_default(const std::string& key) const {
  auto it = values_.find(key);
  const KeyDef* d = find_def(key);
  if (it == values_.end() || !d || d->default_yaml.empty()) return false;
  return convert(*d, YAML::Load(d->default_yaml), Location{"<default>", 0, 0}, key) == it->second.value;
}
int64_t Config::get_int(const std::string& k) const { return std::get<int64_t>(entry(k, Type::Int).value); }
double Config::get_float(const std::string& k) const { return std::get<double>(entry(k, Type::Float).value); }
bool Config::get_bool(const std::string& k) const { return std::get<bool>(entry(k, Type::Bool).value); }
const std::string& Config::get_string(const std::string& k) const {
  return std::get<std::string>(entry(k, Type::String).value);
}
std::vector<int64_t> Config::get_ints(const std::string& k) const {
  return std::get<std::vector<int64_t>>(entry(k, Type::IntList).value);
}
std::vector<double> Config::get_floats(const std::string& k) const {
  return std::get<std::vector<double>>(entry(k, Type::FloatList).value);
}
std::vector<std::string> Config::get_strings(const std::string& k) const {
  return std::get<std::vector<std::string>>(entry(k, Type::StringList).value);
}
const Location& Config::location(const std::string& key) const {
  static const Location none{"<unset>", 0, 0};
  auto it = values_.find(key);
  return it == values_.end() ? none : it->second.loc;
}

void Config::fail(const std::string& key, const std::string& message) const { fail_at(location(key), key, message); }

std::vector<std::string> Config::keys() const {
  std::vector<std::string> k;
  for (const auto& kv : values_) k.push_back(kv.first);
  return k;
}

// --- output ---------------------------------------------------------------------------

namespace {
void emit_value(YAML::Emitter& out, const Value& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, double>) {
          out << fmt::format("{:.17g}", x);
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          out << YAML::Flow << YAML::BeginSeq;
          for (double e : x) out << fmt::format("{:.17g}", e);
          out << YAML::EndSeq;
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>> || std::is_same_v<T, std::vector<std::string>>) {
          out << YAML::Flow << YAML::BeginSeq;
          for (const auto& e : x) out << e;
          out << YAML::EndSeq;
        } else {
          out << x;
        }
      },
      v);
}
}  // namespace

std::string Config::value_yaml(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) throw ConfigError(fmt::format("{}: no such key in the resolved configuration", key));
  YAML::Emitter out;
  emit_value(out, it->second.value);
  return out.c_str();
}

std::string Config::to_yaml(const std::string& skip_prefix) const {
  return yaml_of(
      [&](const std::string& k) { return skip_prefix.empty() || k.compare(0, skip_prefix.size(), skip_prefix) != 0; });
}

std::string Config::yaml_of(const std::function<bool(const std::string& key)>& keep) const {
  // Keys in schema order, then grouped by their dotted sections: every section appears once, where
  // its first key would (layers.fc1.kind, layers.fc2.kind, layers.fc1.rank nest as fc1: {kind,
  // rank}, fc2: {kind}; emitting them in plain schema order would repeat the key fc1).
  std::vector<std::string> keys;
  for (const auto& d : schema())
    for (const auto& k : order_)
      if (segment_match(d.key, k) && std::find(keys.begin(), keys.end(), k) == keys.end() && keep(k)) keys.push_back(k);
  struct Node {
    std::vector<std::pair<std::string, Node>> children;  // sections and keys in first-seen order
    const std::string* key = nullptr;                    // a leaf: the full key
    Node& child(const std::string& name) {
      for (auto& c : children)
        if (c.first == name) return c.second;
      children.emplace_back(name, Node{});
      return children.back().second;
    }
  };
  Node root;
  for (const auto& k : keys) {
    Node* n = &root;
    for (const auto& part : key_sections(k)) n = &n->child(part);
    n->key = &k;
  }
  YAML::Emitter out;
  std::function<void(const Node&)> emit = [&](const Node& n) {
    out << YAML::BeginMap;
    for (const auto& [name, c] : n.children) {
      out << YAML::Key << name << YAML::Value;
      if (c.key)
        emit_value(out, values_.at(*c.key).value);
      else
        emit(c);
    }
    out << YAML::EndMap;
  };
  emit(root);
  return std::string(out.c_str()) + "\n";
}

const std::vector<std::string>& operational_keys() {
  // Not data.eval_batch_size: for chars it sets how many validation windows are drawn (what is measured).
  static const std::vector<std::string> keys = {"train.log_every",      "dist.backend",    "dist.bucket_mb",
                                                "dist.first_bucket_mb", "dist.timeout_s",  "dist.link_gbps",
                                                "dist.latency_us",      "dist.gemm_gflops"};
  return keys;
}

bool is_operational(const std::string& key) {
  const auto& k = operational_keys();
  return std::find(k.begin(), k.end(), key) != k.end();
}

std::string Config::hash() const {
  // FNV-1a 64 over the resolved YAML without output.* and without where it runs (device, threads):
  // stable across runs and machines, so a sweep started on CPUs resumes on GPUs with the same files.
  // Operational keys count at their defaults (config/operational.h): ids made before they were
  // operational, at their defaults, stay as they were, and another value keeps the id.
  Config c = *this;
  for (auto& [k, e] : c.values_) {
    if (!e.def || e.def->default_yaml.empty() || !is_operational(k)) continue;
    Location l{"<default>", 0, 0};
    e.value = convert(*e.def, YAML::Load(e.def->default_yaml), l, k);
  }
  uint64_t h = 1469598103934665603ull;
  std::istringstream lines(c.yaml_of([&](const std::string& k) {
    if (k.compare(0, 7, "output.") == 0) return false;
    // A key added after run ids were in use counts only when it differs from its default (set in
    // a file or not: a configuration and its resolved YAML, which lists every key, share one id).
    const KeyDef* d = find_def(k);
    return !d || d->id_when_default || !c.at_default(k);
  }));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("device:", 0) == 0 || line.rfind("threads:", 0) == 0) continue;  // top-level keys only
    for (unsigned char c : line) h = (h ^ c) * 1099511628211ull;
    h = (h ^ '\n') * 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}

}  // namespace xpand::config
