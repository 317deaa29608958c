// `psctl generate`: sample text from a job's current parameters on this machine's CPU. The
// parameters are pulled straight from the job's parameter servers, like a worker does.
#ifndef PSRV_CLIENT_GENERATE_H_
#define PSRV_CLIENT_GENERATE_H_

#include <cstdint>
#include <optional>
#include <string>

#include "client/command_env.h"

namespace psrv {

struct GenerateFlags {
  std::string job_id;
  std::string prompt = "\n";  // The text to continue; "" starts from token 0.
  // The user's --prompt, as opposed to the default: a default prompt the job's character
  // vocabulary cannot encode is replaced by "" rather than an error.
  bool prompt_given = false;
  int64_t length = 500;          // Tokens to generate, 1..100000.
  double temperature = 0.8;      // > 0, at most 100.
  int64_t top_k = 0;             // Sample among the k most likely tokens; 0: all of them.
  std::optional<uint64_t> seed;  // Unset: a random seed (printed with --json).
  bool json = false;             // Print {"job_id", "state", "step", "prompt", "text", ...}.
};

// Fetches the job (GetJob), pulls its parameters from the servers of its shard map, and prints the
// prompt followed by the generated text. Errors: the job's NOT_FOUND (exit 1); FAILED_PRECONDITION
// when the job has no parameters yet (PENDING) (exit 1); a prompt outside the job's character
// vocabulary or a flag out of range (exit 2).
int GenerateCommand(const CommandEnv& env, const GenerateFlags& flags);

}  // namespace psrv

#endif  // PSRV_CLIENT_GENERATE_H_
