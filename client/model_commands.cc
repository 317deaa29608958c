// The flags of `psctl export` and `psctl generate`, bound to CLI11.
#include "client/model_commands.h"

#include <CLI/CLI.hpp>
#include <memory>

#include "client/cli_flags.h"
#include "client/export.h"
#include "client/generate.h"

namespace psrv {

CommandHandler BindExport(CLI::App* command) {
  auto flags = std::make_shared<ExportFlags>();
  command->add_option("id", flags->job_id, "Job id")->required();
  command->add_option("--format", flags->format, "File format: safetensors (the default)")
      ->type_name("FORMAT");
  command->add_option("--out", flags->out, "Output file (default JOB_ID.safetensors)")
      ->type_name("FILE");
  command->add_flag("--json", flags->json,
                    "Print {\"job_id\", \"path\", \"tensors\", \"parameters\"}");
  return [flags](const CommandEnv& env) { return ExportCommand(env, *flags); };
}

CommandHandler BindGenerate(CLI::App* command) {
  auto flags = std::make_shared<GenerateFlags>();
  command->add_option("id", flags->job_id, "Job id")->required();
  CLI::Option* prompt =
      command
          ->add_option("--prompt", flags->prompt,
                       "Text to continue; must be in the job's vocabulary for a char tokenizer "
                       "(default: a newline)")
          ->type_name("TEXT");
  command
      ->add_option("--length", flags->length, "Tokens to generate, 1..100000 (default 500)")
      ->type_name("N");
  command
      ->add_option("--temperature", flags->temperature,
                   "Softmax temperature, in (0, 100]; lower is more conservative (default 0.8)")
      ->type_name("T");
  command
      ->add_option("--top-k", flags->top_k,
                   "Sample among the K most likely tokens, 0..1000000 (default 0: all of them)")
      ->type_name("K");
  AddOptional(command, "--seed", &flags->seed,
              "Seed of the sampling; the same seed and parameters give the same text (default: "
              "random)")
      ->type_name("N");
  command->add_flag("--json", flags->json,
                    "Print {\"job_id\", \"state\", \"step\", \"prompt\", \"text\", \"length\", "
                    "\"temperature\", \"top_k\", \"seed\"} as JSON");
  return [flags, prompt](const CommandEnv& env) {
    GenerateFlags parsed = *flags;
    parsed.prompt_given = prompt->count() > 0;
    return GenerateCommand(env, parsed);
  };
}

}  // namespace psrv
