// One row of psctl's command table (psctl_main.cc): the command's place and one-line help, and
// the function that adds its flags to the parser and returns what runs it.
#ifndef PSRV_CLIENT_COMMAND_TABLE_H_
#define PSRV_CLIENT_COMMAND_TABLE_H_

#include <functional>

#include "client/command_env.h"

namespace CLI {
class App;
}  // namespace CLI

namespace psrv {

// Runs a parsed command; the flag values it reads were bound to the parser by its Bind function.
using CommandHandler = std::function<int(const CommandEnv&)>;

// Adds a command's flags and positional arguments to `command` (its CLI11 subcommand) and returns
// the handler that runs it with their parsed values.
using BindCommand = CommandHandler (*)(CLI::App* command);

struct CliCommand {
  const char* group;  // "job" for `psctl job submit`; "" for a top-level command.
  const char* name;
  const char* help;  // One line in `psctl --help`; the first line of `psctl COMMAND --help`.
  BindCommand bind;
};

}  // namespace psrv

#endif  // PSRV_CLIENT_COMMAND_TABLE_H_
