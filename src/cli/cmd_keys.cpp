// `xpand keys`: every accepted config key with its type, default, accepted values and meaning,
// printed from the same schema table the validator uses.
#include <fmt/format.h>

#include "cli/commands.h"
#include "config/config.h"

namespace xpand::cli {

Runner keys_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("keys", "list every accepted configuration key");
  auto filter = std::make_shared<std::string>();
  cmd->add_option("prefix", *filter, "only keys starting with this (e.g. train.)");
  return [=]() {
    for (const auto& d : config::schema()) {
      if (d.key.compare(0, filter->size(), *filter) != 0) continue;
      fmt::print("{:<24} {}\n", d.key, d.doc);
      fmt::print("{:<24}   accepted: {}; default: {}", "", config::describe_accepted(d),
                 d.default_yaml.empty() ? "(none)" : d.default_yaml);
      if (!d.when_key.empty()) fmt::print("; only when {} is {}", d.when_key, fmt::join(d.when_values, "|"));
      fmt::print("\n");
    }
    return 0;
  };
}

}  // namespace xpand::cli
