// The CLI11 flags shared by psctl's commands (see cli_flags.h).
#include "client/cli_flags.h"

namespace psrv {
namespace {

// --spec, and the overrides of the job's name and data.
void AddSpecFileAndDataFlags(CLI::App* app, JobSpecFlags* flags) {
  app->add_option("--spec", flags->spec_file,
                  "Job spec file, JSON (.json) or YAML (.yaml/.yml), '-' for stdin; the flags "
                  "below override its fields. Fields: name, model{kind,context,layers,heads,width,"
                  "dropout,embedding_dim,hidden_dim,tokenizer,vocabulary,vocab_size}, data{path,"
                  "format,validation_fraction,validation_path}, training{steps,batch_size,"
                  "optimizer{kind,learning_rate,momentum,beta1,beta2,epsilon,weight_decay,"
                  "warmup_steps,decay_steps,min_learning_rate},consistency,seed,report_every,"
                  "sample_length,wire_dtype,grad_clip,eval_every,eval_batches}, num_servers, "
                  "num_workers")
      ->type_name("FILE");
  AddOptional(app, "--name", &flags->name, "Job name (default \"job\")")->type_name("NAME");
  AddOptional(app, "--data", &flags->data,
              "Training text file, as the workers see it (data.path; required)")
      ->type_name("FILE");
  AddOptional(app, "--init-from", &flags->init_from,
              "Start from the parameters in this safetensors file (as written by psctl export; "
              "every server must be able to read it) instead of a random initialisation")
      ->type_name("FILE");
  AddOptional(app, "--validation-fraction", &flags->validation_fraction,
              "Fraction of the data file, at its end, kept for validation, in (0, 0.5] "
              "(default 0.1)")
      ->type_name("F");
}

void AddModelFlags(CLI::App* app, JobSpecFlags* flags) {
  AddOptional(app, "--model", &flags->model,
              "gpt (decoder-only transformer) or mlp (embeddings of the last --context tokens, "
              "one hidden layer) (default gpt)")
      ->type_name("KIND")
      ->check(CLI::IsMember({"gpt", "mlp"}, CLI::ignore_case));
  AddOptional(app, "--context", &flags->context,
              "Tokens of context; depends on the model: gpt block size 1..4096 (default 64), "
              "mlp 1..64 (default 8)")
      ->type_name("N");
  AddOptional(app, "--layers", &flags->layers, "gpt: transformer blocks, 1..96 (default 4)")
      ->type_name("N");
  AddOptional(app, "--heads", &flags->heads,
              "gpt: attention heads, 1..width, must divide --width (default 4)")
      ->type_name("N");
  AddOptional(app, "--width", &flags->width, "gpt: embedding width, 1..16384 (default 128)")
      ->type_name("N");
  AddOptional(app, "--dropout", &flags->dropout, "gpt: dropout probability in [0, 1) (default 0)")
      ->type_name("P");
  AddOptional(app, "--embedding-dim", &flags->embedding_dim,
              "mlp: per-token embedding width, 1..1024 (default 24)")
      ->type_name("N");
  AddOptional(app, "--hidden-dim", &flags->hidden_dim,
              "mlp: hidden layer width, 1..16384 (default 256)")
      ->type_name("N");
  AddOptional(app, "--tokenizer", &flags->tokenizer,
              "byte (256 tokens, one per byte value), char (one token per distinct byte of the "
              "data file, which psctl reads to list them) or bpe (subwords: psctl trains a "
              "SentencePiece BPE model of --vocab-size pieces on the data file's training split "
              "and stores it with the job) (default byte)")
      ->type_name("KIND")
      ->check(CLI::IsMember({"byte", "char", "bpe"}, CLI::ignore_case));
  AddOptional(app, "--tie-embeddings", &flags->tie_embeddings,
              "gpt: the output head reuses the token embedding (true, the default) or has a table "
              "of its own (false: the input embedding is then a sparse table, and workers push "
              "only the rows of the tokens in their batch; CPU workers only)")
      ->type_name("BOOL");
  AddOptional(app, "--vocab-size", &flags->vocab_size,
              "Tokenizer bpe: pieces of the BPE model, 259..65536 (default 8192); tokenizer ids "
              "(data.format nanogpt_bin or llmc_bin): the ids' vocabulary size, 1..65536")
      ->type_name("V");
}

// Training, evaluation, the optimizer and its schedule, and the consistency mode.
void AddTrainingFlags(CLI::App* app, JobSpecFlags* flags) {
  AddOptional(app, "--steps", &flags->steps, "Optimizer steps per worker, 1..1e9 (default 1000)")
      ->type_name("N");
  AddOptional(app, "--batch-size", &flags->batch_size,
              "Examples per worker per step, 1..65536 (default 12)")
      ->type_name("N");
  AddOptional(app, "--optimizer", &flags->optimizer,
              "sgd, momentum or adamw (default adamw; momentum if only --momentum is given)")
      ->type_name("KIND")
      ->check(CLI::IsMember({"sgd", "momentum", "adamw"}, CLI::ignore_case));
  AddOptional(app, "--lr", &flags->lr,
              "Peak learning rate, in (0, 10] (default 0.001 for adamw, 0.1 for sgd and momentum)")
      ->type_name("RATE");
  AddOptional(app, "--momentum", &flags->momentum,
              "Momentum of --optimizer momentum, in [0, 1) (default 0.9); selects that optimizer "
              "unless --optimizer is given")
      ->type_name("M");
  AddOptional(app, "--beta1", &flags->beta1, "adamw: beta1 in (0, 1) (default 0.9)")
      ->type_name("B");
  AddOptional(app, "--beta2", &flags->beta2, "adamw: beta2 in (0, 1) (default 0.95)")
      ->type_name("B");
  AddOptional(app, "--weight-decay", &flags->weight_decay,
              "adamw: decoupled weight decay of the weight matrices, in [0, 10] (default 0)")
      ->type_name("W");
  AddOptional(app, "--warmup-steps", &flags->warmup_steps,
              "Learning rate warm-up: linear from lr/N to lr over N steps, 0..1e9 (default 0: "
              "none)")
      ->type_name("N");
  AddOptional(app, "--decay-steps", &flags->decay_steps,
              "Cosine decay of the learning rate from the end of the warm-up to --min-lr at this "
              "step, 0..1e9; must exceed --warmup-steps (default 0: no decay)")
      ->type_name("N");
  AddOptional(app, "--min-lr", &flags->min_lr,
              "Learning rate at the end of the decay, in [0, --lr] (default 0)")
      ->type_name("RATE");
  AddOptional(app, "--grad-clip", &flags->grad_clip,
              "Clip each worker's gradient to this global L2 norm, >= 0 (default 0: off)")
      ->type_name("NORM");
  AddOptional(app, "--eval-every", &flags->eval_every,
              "Steps between validation losses, 0..1e9 (default 0: only at the end)")
      ->type_name("N");
  AddOptional(app, "--eval-batches", &flags->eval_batches,
              "Batches per validation loss, 1..10000 (default 20)")
      ->type_name("N");
  AddOptional(app, "--mode", &flags->mode,
              "Consistency: sync (servers average every worker's step), async (apply each "
              "push as it arrives) or ssp (bounded staleness: pushes applied as they arrive, a "
              "worker at most --staleness steps ahead of the slowest) (default sync)")
      ->type_name("MODE")
      ->check(CLI::IsMember({"sync", "async", "ssp"}, CLI::ignore_case));
  AddOptional(app, "--staleness", &flags->staleness,
              "With --mode ssp: how many steps a worker may run ahead of the slowest live one, "
              "0..1000000 (default 0: SYNC's schedule, each push applied as it arrives)")
      ->type_name("N");
  AddOptional(app, "--aggregate-first", &flags->aggregate_first,
              "With --mode sync: backup workers. A step is applied once this many workers pushed "
              "it (1..--workers); the others' pushes for it are dropped and they go on at the "
              "servers' step (default 0: every worker)")
      ->type_name("N");
  AddOptional(app, "--top-k", &flags->top_k,
              "Gradient compression: each push sends only the largest FRACTION of its values "
              "by magnitude (e.g. 0.01), the rest carried to the next step (error feedback)")
      ->type_name("FRACTION");
}

}  // namespace

void AddJobSpecFlags(CLI::App* app, JobSpecFlags* flags, bool cluster_size) {
  AddSpecFileAndDataFlags(app, flags);
  AddModelFlags(app, flags);
  AddTrainingFlags(app, flags);
  if (cluster_size) {
    AddOptional(app, "--servers", &flags->servers,
                "Servers to shard the parameters over, 1..64 (default 1)")
        ->type_name("N");
    AddOptional(app, "--workers", &flags->workers,
                "Workers, 1..64 (default 1): data-parallel, or --pipeline stages per data-parallel "
                "group")
        ->type_name("N");
  }
  AddOptional(app, "--pipeline", &flags->pipeline,
              "Pipeline parallelism (gpt): the model's layers split over this many workers per "
              "group, 1..layers; --workers must be a multiple (default 1: none)")
      ->type_name("P");
  AddOptional(app, "--micro-batches", &flags->micro_batches,
              "With --pipeline: micro-batches of --batch-size rows per group and step, their "
              "gradients accumulated, 1..4096 (default: the gradient accumulation, 1)")
      ->type_name("M");
  AddOptional(app, "--schedule", &flags->schedule,
              "With --pipeline: gpipe (all forwards, then all backwards) or 1f1b (less activation "
              "memory) (default 1f1b)")
      ->type_name("KIND")
      ->check(CLI::IsMember({"gpipe", "1f1b"}, CLI::ignore_case));
  AddOptional(app, "--seed", &flags->seed, "Seed of initialisation and sampling (default 1)")
      ->type_name("N");
}

}  // namespace psrv
