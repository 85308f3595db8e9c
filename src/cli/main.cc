// whittle: one binary, subcommands (see cli/commands.h). Errors in outside input end with one
// message naming what was wrong and exit status 1; usage errors with CLI11's message and status 2.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "ops/matmul.h"
#include "util/error.h"

int main(int argc, char** argv) {
  // OpenBLAS has already chosen its kernels (at load); where it chose below this CPU (a VM with a
  // generic model number gets SSE3 kernels), run again with OPENBLAS_CORETYPE set. Once only: the
  // second run finds the variable set. A user's own OPENBLAS_CORETYPE is left alone.
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    if (const char* core = whittle::openblas_better_core()) {
      setenv("OPENBLAS_CORETYPE", core, 1);
      execv("/proc/self/exe", argv);  // returns only on failure: then carry on as we are
    }
  }
  CLI::App app{"whittle: prune, quantize and run GLM-5-architecture MoE models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "whittle 0.1");
  std::map<CLI::App*, whittle::cli::Command> commands;
  auto add = [&](auto adder) {
    size_t before = app.get_subcommands({}).size();
    whittle::cli::Command run = adder(app);
    commands[app.get_subcommands({})[before]] = std::move(run);
  };
  add(whittle::cli::add_info);
  add(whittle::cli::add_generate);
  add(whittle::cli::add_logits);
  add(whittle::cli::add_eval);
  add(whittle::cli::add_prune);
  add(whittle::cli::add_quantize);
  add(whittle::cli::add_bench);
  add(whittle::cli::add_serve);
  add(whittle::cli::add_chat);
  // CLI11 says only "A subcommand is required" for `whittle foo`.
  if (argc > 1 && argv[1][0] != '-') {
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
    if (std::find(names.begin(), names.end(), argv[1]) == names.end()) {
      fmt::print(stderr,
                 "whittle: unknown subcommand '{}' (expected one of: {})\nRun with --help for more "
                 "information.\n",
                 argv[1], fmt::join(names, ", "));
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    for (auto& [sub, run] : commands)
      if (sub->parsed()) return run();
  } catch (const whittle::Error& e) {
    fmt::print(stderr, "whittle: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "whittle: internal error: {}\n", e.what());
    return 1;
  }
  return 1;
}
