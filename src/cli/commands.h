// The subcommands of the whittle binary. Each registers its options on the CLI11 app and returns
// the function that runs it; main() dispatches and turns whittle::Error into a message and exit 1.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace whittle::cli {

using Command = std::function<int()>;

Command add_info(CLI::App& app);
Command add_generate(CLI::App& app);
Command add_logits(CLI::App& app);
Command add_eval(CLI::App& app);
Command add_prune(CLI::App& app);
Command add_quantize(CLI::App& app);
Command add_bench(CLI::App& app);
Command add_serve(CLI::App& app);
Command add_chat(CLI::App& app);

}  // namespace whittle::cli
