// `xpand keys`: every accepted config key with its type, default, accepted values and meaning,
// printed from the same schema table the validator uses.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fnmatch.h>

#include <string>
#include <vector>

#include "cli/commands.h"
#include "config/config.h"
#include "core/error.h"

namespace xpand::cli {

Runner keys_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("keys", "list every accepted configuration key");
  auto filter = std::make_shared<std::string>();
  cmd->add_option("prefix", *filter, "only keys starting with this (e.g. train.)");
  return [=]() {
    int shown = 0;
    for (const auto& d : config::schema()) {
      // A prefix of the key, or a key the schema holds as a pattern (layers.fc1.kind: layers.*.kind).
      if (d.key.compare(0, filter->size(), *filter) != 0 && fnmatch(d.key.c_str(), filter->c_str(), 0) != 0) continue;
      ++shown;
      fmt::print("{:<24} {}\n", d.key, d.doc);
      fmt::print("{:<24}   accepted: {}; default: {}", "", config::describe_accepted(d),
                 d.default_yaml.empty() ? "(none)" : d.default_yaml);
      if (!d.when_key.empty()) fmt::print("; only when {} is {}", d.when_key, fmt::join(d.when_values, "|"));
      fmt::print("\n");
    }
    if (shown == 0) {  // a misspelled prefix: say so (exit 2), with the keys that contain it
      std::vector<std::string> near;
      for (const auto& d : config::schema())
        if (d.key.find(*filter) != std::string::npos) near.push_back(d.key);
      throw ConfigError(fmt::format("keys {}: no key starts with '{}'{}", *filter, *filter,
                                    near.empty() ? " (`xpand keys` lists them all)"
                                                 : fmt::format("; keys containing it: {}", fmt::join(near, ", "))));
    }
    return 0;
  };
}

}  // namespace xpand::cli
