// psctl's commands on a job's model parameters: `export` (client/export.h) and `generate`
// (client/generate.h), as rows of the command table (command_table.h).
#ifndef PSRV_CLIENT_MODEL_COMMANDS_H_
#define PSRV_CLIENT_MODEL_COMMANDS_H_

#include "client/command_table.h"

namespace psrv {

CommandHandler BindExport(CLI::App* command);
CommandHandler BindGenerate(CLI::App* command);

}  // namespace psrv

#endif  // PSRV_CLIENT_MODEL_COMMANDS_H_
