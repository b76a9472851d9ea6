// xpand: linear over-parameterization benchmark suite. Entry point: parses the subcommand,
// runs it, and maps failures to exit codes (2: bad input, 1: runtime failure, 3: diverged).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "config/lookup.h"
#include "core/blas.h"
#include "core/build_info.h"
#include "core/error.h"
#include "core/log.h"
#include "core/signals.h"
#include "core/utf8.h"
#include "dist/context.h"

namespace xpand::cli {

void add_config_args(CLI::App* cmd, ConfigArgs* args) {
  cmd->add_option("config", args->path, "configuration file (YAML)")->required();
  cmd->add_option("--set", args->overrides, "override a config key: --set train.lr=0.01 (repeatable)")
      ->type_name("KEY=VALUE");
}

void require_input(const std::string& path, const std::string& flag, InputKind kind) {
  std::error_code ec;
  const std::string named = (flag.empty() ? "" : flag + " ") + path;
  if (!std::filesystem::exists(path, ec)) throw DataError(fmt::format("{}: no such file or directory", named));
  const bool dir = std::filesystem::is_directory(path, ec);
  if (kind == InputKind::File && dir) throw ConfigError(fmt::format("{}: a directory, not a file", named));
  if (kind == InputKind::Directory && !dir) throw ConfigError(fmt::format("{}: not a directory", named));
}

namespace {

// The subcommand word of argv when it names no subcommand ("trian"), with the nearest real one; an
// empty message when argv's subcommand is fine or absent (CLI11 then says what is missing).
std::string unknown_subcommand(int argc, char** argv, const CLI::App& app) {
  std::vector<std::string> names;
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) names.push_back(sub->get_name());
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--log-level") {
      ++i;
      continue;
    }
    if (a.empty() || a[0] == '-') continue;
    if (std::find(names.begin(), names.end(), a) != names.end()) return {};
    std::string best;
    size_t best_d = std::string::npos;
    for (const auto& n : names)
      if (size_t d = config::edit_distance(a, n); d < best_d) best_d = d, best = n;
    std::string hint = best_d <= std::max<size_t>(2, a.size() / 3) ? fmt::format("; did you mean '{}'?", best) : "";
    return fmt::format("unknown command '{}'{} (commands: {}; xpand --help says more)", a, hint,
                       fmt::join(names, ", "));
  }
  return {};
}

}  // namespace

store::SnapshotRef pick_snapshot(const std::vector<store::SnapshotRef>& snaps, const std::string& file, bool step_given,
                                 int64_t step) {
  if (!step_given) {
    if (snaps.back().complete) return snaps.back();
    if (snaps.size() == 1)
      throw DataError(fmt::format("{}: its only snapshot (step {}) is incomplete (its run did not finish writing it)",
                                  file, snaps.back().step));
    log::warn("{}: the snapshot at step {} is incomplete (its run did not finish writing it); using step {}", file,
              snaps.back().step, snaps[snaps.size() - 2].step);
    return snaps[snaps.size() - 2];
  }
  for (const auto& s : snaps)
    if (s.step == step) {
      if (!s.complete)
        throw DataError(fmt::format(
            "--step {}: {}'s snapshot at that step is incomplete (its run did not finish "
            "writing it){}",
            step, file,
            snaps.size() > 1 ? fmt::format("; step {} is complete", snaps[snaps.size() - 2].step) : std::string()));
      return s;
    }
  throw ConfigError(fmt::format("--step {}: {} has no snapshot at that step (snapshots: {})", step, file,
                                store::snapshot_steps_str(snaps)));
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = s[i];
    if (c >= 0x80) {  // well-formed multi-byte UTF-8 passes through; anything else becomes U+FFFD
      const size_t n = utf8::sequence_length(s, i);
      if (n == 0) {
        out += "\\ufffd";
      } else {
        out.append(s, i, n);
        i += n - 1;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20)
          out += fmt::format("\\u{:04x}", c);
        else
          out += char(c);
    }
  }
  return out + "\"";
}

// train and sweep turn stop signals into a checkpoint and exit 4 (Slurm scripts requeue on 4). Their
// handlers go in before anything else runs: from the executable's .preinit_array, which the dynamic
// loader calls before the initialisers of the shared libraries (libtorch's take most of a second),
// so that a signal during start-up is not the default action's 143 or 138. Only sigaction is
// called here; the handler itself is async-signal-safe (core/signals.cpp).
void install_early_handlers(int argc, char** argv, char**) {
  for (int i = 1; i < argc && argv != nullptr && argv[i] != nullptr; ++i) {
    const char* a = argv[i];
    if (std::strcmp(a, "--log-level") == 0) {  // a global option's value
      ++i;
      continue;
    }
    if (a[0] == '-') continue;
    if (std::strcmp(a, "train") == 0 || std::strcmp(a, "sweep") == 0) signals::install_preemption_handlers();
    return;  // the subcommand
  }
}

__attribute__((section(".preinit_array"), used)) void (*const kEarlyHandlers)(int, char**,
                                                                              char**) = &install_early_handlers;

}  // namespace xpand::cli

int main(int argc, char** argv) {
  using namespace xpand;
  blas::select_kernels(argc, argv);  // may execute this program again with OPENBLAS_CORETYPE set
  log::set_rank(0, 1);
  CLI::App app{"xpand: linear over-parameterization of neural networks, from one core to many GPUs"};
  app.require_subcommand(1);
  // Global options (--log-level) also after the subcommand; CLI11's messages carry the program's name.
  app.fallthrough();
  app.failure_message(
      [](const CLI::App* a, const CLI::Error& e) { return "xpand: " + CLI::FailureMessage::simple(a, e); });
  app.set_version_flag("--version", std::string("xpand ") + XPAND_VERSION + " (commit " + XPAND_GIT_COMMIT +
                                        ", libtorch " + TORCH_VERSION + ")");
  std::string level = "info";
  app.add_option("--log-level", level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  cli::Runner train = cli::train_command(app), plan = cli::plan_command(app), keys = cli::keys_command(app),
              analyze = cli::analyze_command(app), inspect = cli::inspect_command(app), index = cli::index_command(app),
              collapse = cli::collapse_command(app), sweep = cli::sweep_command(app),
              forward = cli::forward_command(app), eval = cli::eval_command(app);
  if (const std::string bad = cli::unknown_subcommand(argc, argv, app); !bad.empty()) {
    std::cerr << "xpand: " << utf8::printable(bad) << "\n";
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  log::set_level(level);
  // The reading commands end without running the exit handlers: HDF5's library shutdown frees its
  // free lists there, and a damaged file can have corrupted them (seen in the fuzz corpus: "double
  // free or corruption" and SIGABRT after the output was printed). Everything they write is closed
  // and their output flushed by then.
  // A train or sweep with a non-zero exit code (failed, diverged, preempted) ends the same way, after
  // MPI_Finalize: a failure HDF5 reported (a flush that failed) can leave a file its shutdown then
  // crashes on, turning exit 1 into SIGSEGV. Everything they wrote is closed by then.
  const bool reading = app.got_subcommand("inspect") || app.got_subcommand("index") || app.got_subcommand("collapse") ||
                       app.got_subcommand("analyze") || app.got_subcommand("forward") || app.got_subcommand("eval");
  const bool training = app.got_subcommand("train") || app.got_subcommand("sweep");
  auto done = [reading, training](int code) {
    if (reading || (training && code != 0)) {
      if (training) dist::finalize();
      std::cout.flush();
      std::fflush(nullptr);
      std::_Exit(code);
    }
    return code;
  };
  // A fatal error on one rank of an MPI job ends the whole job (no rank left in a collective).
  auto fail = [&done](const std::string& prefix, const std::string& what, int code) {
    dist::abort_job_if_distributed(code, prefix + what);
    std::cerr << "xpand: " << prefix << utf8::printable(what, /*keep_newlines=*/true) << "\n";
    return done(code);
  };
  try {
    if (app.got_subcommand("train")) {
      dist::Context::init(&argc, &argv);  // MPI: a world of one without a launcher
      return done(train());
    }
    if (app.got_subcommand("sweep")) {
      dist::Context::init(&argc, &argv);
      return done(sweep());
    }
    if (app.got_subcommand("plan")) return plan();
    if (app.got_subcommand("keys")) return keys();
    if (app.got_subcommand("analyze")) return done(analyze());
    if (app.got_subcommand("inspect")) return done(inspect());
    if (app.got_subcommand("index")) return done(index());
    if (app.got_subcommand("collapse")) return done(collapse());
    if (app.got_subcommand("forward")) return done(forward());
    if (app.got_subcommand("eval")) return done(eval());
  } catch (const ConfigError& e) {
    return fail("config error: ", e.what(), e.exit_code());
  } catch (const Error& e) {
    return fail("error: ", e.what(), e.exit_code());
  } catch (const std::exception& e) {
    return fail("error: ", e.what(), kExitFailure);
  }
  return kExitUsage;
}
