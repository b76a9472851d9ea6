// The `xpand` subcommands: each registers its flags on the CLI11 app and returns the function
// that runs it (an exit code). main.cpp owns error handling and exit codes.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "store/index.h"

namespace xpand::cli {

using Runner = std::function<int()>;

// Flags shared by commands that take a config: CONFIG positional and repeated --set key=value.
struct ConfigArgs {
  std::string path;
  std::vector<std::string> overrides;
};
void add_config_args(CLI::App* cmd, ConfigArgs* args);

// An input named on the command line (config, sweep file, run file, weights, output directory):
// DataError (exit 1) "<flag> PATH: no such file or directory" when it is missing, the same words in
// every subcommand (README, exit codes); ConfigError (exit 2) when it is a directory where a file is
// meant (dir_ok false) or a file where a directory is (dir_ok true with dir_only). flag: the option
// that named it ("--weights"), empty for a positional.
enum class InputKind { File, FileOrDirectory, Directory };
void require_input(const std::string& path, const std::string& flag = "", InputKind kind = InputKind::File);

Runner train_command(CLI::App& app);
Runner plan_command(CLI::App& app);
Runner keys_command(CLI::App& app);
Runner analyze_command(CLI::App& app);
Runner inspect_command(CLI::App& app);
Runner index_command(CLI::App& app);
Runner collapse_command(CLI::App& app);
Runner sweep_command(CLI::App& app);
Runner forward_command(CLI::App& app);
Runner eval_command(CLI::App& app);

// The snapshot --step names (the last one when --step was not given); ConfigError listing the
// available steps when there is none at that step. `snaps` must not be empty.
store::SnapshotRef pick_snapshot(const std::vector<store::SnapshotRef>& snaps, const std::string& file, bool step_given,
                                 int64_t step);

// `xpand inspect DIR`'s table of these run files (a sweep prints it when it ends); 1 when a file is
// unreadable.
int print_run_table(const std::vector<std::string>& files, const std::string& where);

// A JSON string literal (quoted, escaped) for the --json outputs.
std::string json_string(const std::string& s);

}  // namespace xpand::cli
