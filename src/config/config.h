// Typed, validated configuration: YAML files plus `--set key=value` overrides, checked against one
// schema table (config/schema.cpp) that also drives `xpand keys` and the resolved config written to
// every run file. Any invalid input throws ConfigError (exit code 2) naming the key, the source file
// and line, and the accepted values.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace xpand::config {

enum class Type { Int, Float, Bool, String, IntList, FloatList, StringList };
const char* type_name(Type t);

// One accepted key. Dotted path; a "*" segment matches any single name (per-layer sections).
struct KeyDef {
  std::string key;
  Type type;
  std::string default_yaml;  // YAML text of the default; empty: no default (key absent unless set)
  std::string doc;
  double min = -std::numeric_limits<double>::infinity();  // numbers and list elements
  double max = std::numeric_limits<double>::infinity();
  bool min_open = false;             // true: value must be > min (not >=)
  std::vector<std::string> choices;  // strings and string-list elements
  std::string when_key;              // applies only when when_key's value is one of when_values
  std::vector<std::string> when_values;
  // false: a key added after run ids were in use: at its default value it is not part of the run id
  // (Config::hash), so every configuration that existed before keeps its id.
  bool id_when_default = true;
};

// The schema: every key xpand accepts, in display order.
const std::vector<KeyDef>& schema();
// The parameterization fields (keys without the "param." / "layers.*." prefix): "kind", then the
// options of every kind, as the parameterization registry (src/param/registry.cpp) provides them.
// The config layer does not know the kinds: the registry hands them over before main() through
// set_param_fields(), and the first call here fixes the list.
const std::vector<KeyDef>& param_fields();
void set_param_fields(std::function<std::vector<KeyDef>()> provider);
// Builders for schema entries (key, type, YAML default, help; then a range or choices).
KeyDef key_def(std::string key, Type type, std::string default_yaml, std::string doc);
// The same entry marked as added after run ids were in use (KeyDef::id_when_default = false).
KeyDef key_added(KeyDef d);
KeyDef key_range(KeyDef d, double lo, double hi = std::numeric_limits<double>::infinity(), bool lo_open = false);
KeyDef key_choices(KeyDef d, std::vector<std::string> choices);
// Human-readable description of the accepted values of a key ("float > 0", "one of: a, b").
std::string describe_accepted(const KeyDef& def);

struct Location {
  std::string source;  // file path, "--set", or "<default>"
  int line = 0;        // 1-based; 0 when unknown
  int column = 0;
  std::string str() const;  // "file:line:col" or "--set"
};

using Value = std::variant<int64_t, double, bool, std::string, std::vector<int64_t>, std::vector<double>,
                           std::vector<std::string>>;

class Config {
 public:
  // Loads a YAML file, applies overrides ("dotted.key=yaml-value"), fills defaults and validates.
  static Config load_file(const std::string& path, const std::vector<std::string>& overrides = {});
  // Same from YAML text; `source` names it in messages.
  static Config load_string(const std::string& yaml_text, const std::string& source,
                            const std::vector<std::string>& overrides = {});

  bool has(const std::string& key) const;
  // Whether the key holds its schema default's value (set explicitly to it or not); false for a key
  // without a default or one the config does not hold.
  bool at_default(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  std::vector<int64_t> get_ints(const std::string& key) const;
  std::vector<double> get_floats(const std::string& key) const;
  std::vector<std::string> get_strings(const std::string& key) const;
  const Location& location(const std::string& key) const;

  // Throws ConfigError "<location>: <key>: <message>" (for checks that span several keys).
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

  // The resolved configuration as nested YAML (every key with its effective value), leaving out
  // keys that start with `skip_prefix` when it is not empty.
  std::string to_yaml(const std::string& skip_prefix = "") const;
  // One key's value as YAML text ("4", "0.001", "[784, 256, 10]", "relu"); ConfigError for a key
  // the config does not hold.
  std::string value_yaml(const std::string& key) const;
  // Keys with their values, sorted; for tests and plan output.
  std::vector<std::string> keys() const;
  // A short stable hash (16 hex digits) of the resolved configuration without output.* keys
  // (where results go does not change what they are) and without keys added after run ids were in
  // use while they hold their default (KeyDef::id_when_default).
  std::string hash() const;

 private:
  std::string yaml_of(const std::function<bool(const std::string& key)>& keep) const;
  struct Entry {
    Value value;
    Location loc;
    const KeyDef* def = nullptr;
  };
  const Entry& entry(const std::string& key, Type expected) const;
  void set(const std::string& key, Entry e);
  void apply_defaults_and_check();
  void check_run_name() const;

  std::map<std::string, Entry> values_;
  std::vector<std::string> order_;  // insertion order of keys (schema order for defaults)

  friend class Loader;
};

}  // namespace xpand::config
