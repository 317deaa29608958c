#include "common/job_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <string>

#include "common/bpe.h"
#include "common/model_layout.h"
#include "google/protobuf/util/message_differencer.h"

namespace psrv {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

MATCHER_P(EqualsProto, expected, "") {
  return google::protobuf::util::MessageDifferencer::Equals(arg, expected);
}

constexpr char kJson[] = R"({
  "name": "tiny",
  "model": {"kind": "mlp", "context": 4, "embeddingDim": 16, "hiddenDim": 64},
  "data": {"path": "/tmp/text.txt"},
  "training": {
    "steps": 500, "batchSize": 32,
    "optimizer": {"kind": "MOMENTUM", "learningRate": 0.05, "momentum": 0.8},
    "consistency": "ASYNC", "seed": 7, "reportEvery": 5, "sampleLength": 100,
    "wireDtype": "FP32"
  },
  "numServers": 2, "numWorkers": 3
})";

constexpr char kYaml[] = R"(# A small job.
name: tiny
model:
  kind: mlp
  context: 4
  embedding_dim: 16
  hidden_dim: 64
data:
  path: /tmp/text.txt
training:
  steps: 500
  batch_size: 32
  optimizer:
    kind: MOMENTUM
    learning_rate: 0.05
    momentum: 0.8
  consistency: ASYNC
  seed: 7
  report_every: 5
  sample_length: 100
  wire_dtype: FP32
num_servers: 2
num_workers: 3
)";

JobSpec ExpectedSpec() {
  JobSpec spec;
  spec.set_name("tiny");
  spec.mutable_model()->set_kind("mlp");
  spec.mutable_model()->set_context(4);
  spec.mutable_model()->set_embedding_dim(16);
  spec.mutable_model()->set_hidden_dim(64);
  spec.mutable_data()->set_path("/tmp/text.txt");
  TrainingSpec* t = spec.mutable_training();
  t->set_steps(500);
  t->set_batch_size(32);
  t->mutable_optimizer()->set_kind(MOMENTUM);
  t->mutable_optimizer()->set_learning_rate(0.05f);
  t->mutable_optimizer()->set_momentum(0.8f);
  t->set_consistency(ASYNC);
  t->set_seed(7);
  t->set_report_every(5);
  t->set_sample_length(100);
  t->set_wire_dtype(FP32);
  spec.set_num_servers(2);
  spec.set_num_workers(3);
  return spec;
}

// A defaulted, valid spec to break one field at a time.
JobSpec ValidSpec() {
  JobSpec spec;
  spec.mutable_data()->set_path("/tmp/text.txt");
  ApplyJobDefaults(&spec);
  return spec;
}

JobSpec ValidMlpSpec() {
  JobSpec spec;
  spec.mutable_data()->set_path("/tmp/text.txt");
  spec.mutable_model()->set_kind("mlp");
  ApplyJobDefaults(&spec);
  return spec;
}

void ExpectInvalid(const absl::Status& status, const std::string& substring) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
}

TEST(ParseJobSpecTest, JsonAndYamlGiveTheSameSpec) {
  absl::StatusOr<JobSpec> from_json = ParseJobSpec(kJson);
  absl::StatusOr<JobSpec> from_yaml = ParseJobSpec(kYaml);
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  ASSERT_TRUE(from_yaml.ok()) << from_yaml.status();
  EXPECT_THAT(*from_json, EqualsProto(ExpectedSpec()));
  EXPECT_THAT(*from_yaml, EqualsProto(ExpectedSpec()));
}

TEST(ParseJobSpecTest, AcceptsSnakeCaseJsonAndCamelCaseYaml) {
  absl::StatusOr<JobSpec> json = ParseJobSpec(
      R"({"num_servers": 2, "training": {"batch_size": 8, "optimizer": {"learning_rate": 0.5}}})");
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(json->num_servers(), 2u);
  EXPECT_EQ(json->training().batch_size(), 8u);
  EXPECT_FLOAT_EQ(json->training().optimizer().learning_rate(), 0.5f);

  absl::StatusOr<JobSpec> yaml =
      ParseJobSpec("numServers: 2\ntraining:\n  batchSize: 8\n  optimizer: {learningRate: 0.5}\n");
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_THAT(*yaml, EqualsProto(*json));
}

TEST(ParseJobSpecTest, YamlScalars) {
  // Quoted numbers and names that look like numbers or booleans.
  absl::StatusOr<JobSpec> spec = ParseJobSpec(
      "name: 123\ndata: {path: 'true'}\ntraining: {steps: '42', seed: 1_000, batch_size: 1e3}\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "123");
  EXPECT_EQ(spec->data().path(), "true");
  EXPECT_EQ(spec->training().steps(), 42u);
  EXPECT_EQ(spec->training().seed(), 1000u);
  EXPECT_EQ(spec->training().batch_size(), 1000u);
}

TEST(ParseJobSpecTest, YamlNullLeavesDefault) {
  absl::StatusOr<JobSpec> spec = ParseJobSpec("name: x\nmodel:\ntraining: {steps: ~}\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->training().steps(), 0u);
  EXPECT_FALSE(spec->has_model());
}

TEST(ParseJobSpecTest, MalformedJson) {
  absl::StatusOr<JobSpec> spec = ParseJobSpec("{\"name\": \"x\",\n \"numServers\": }");
  ExpectInvalid(spec.status(), "invalid JSON job spec: parse error at line 2, column 16");
  ExpectInvalid(ParseJobSpec("{\"name\": \"x\"").status(), "invalid JSON job spec");
}

TEST(ParseJobSpecTest, MalformedYamlNamesTheLine) {
  absl::StatusOr<JobSpec> spec = ParseJobSpec("name: x\nmodel:\n  kind: [mlp\n");
  ExpectInvalid(spec.status(), "invalid YAML at line");
}

TEST(ParseJobSpecTest, MalformedInputNeverThrows) {
  ExpectInvalid(ParseJobSpec("{\"training\": {\"steps\": 1e400}}").status(), "JSON");
  ExpectInvalid(ParseJobSpec("name: x\ntraining:\n\tsteps: 5\n").status(),
                "YAML does not allow tabs");
  ExpectInvalid(ParseJobSpec("name: *undefined_alias\n").status(), "YAML");
  ExpectInvalid(ParseJobSpec("{\"name\": \"\\ud800\"}").status(), "");
}

TEST(ParseJobSpecTest, EmptyInput) { ExpectInvalid(ParseJobSpec("  \n").status(), "empty"); }

TEST(ParseJobSpecTest, NotAMapping) {
  ExpectInvalid(ParseJobSpec("just some words\n").status(), "must be a mapping");
  ExpectInvalid(ParseJobSpec("- a\n- b\n").status(), "must be a mapping");
}

TEST(ParseJobSpecTest, UnknownFieldRejected) {
  ExpectInvalid(ParseJobSpec("name: x\nmodel:\n  kind: mlp\n  depth: 3\n").status(),
                "unknown field \"model.depth\" (line 4)");
  // JSON too, and with the line when the JSON is also readable as YAML.
  absl::Status json = ParseJobSpec("{\"name\": \"x\",\n \"trainingg\": {}}").status();
  ExpectInvalid(json, "unknown field \"trainingg\" (line 2)");
  ExpectInvalid(json, "has fields: name, model, data, training");
}

TEST(ParseJobSpecTest, WrongTypesNameFieldAndLine) {
  ExpectInvalid(ParseJobSpec("training:\n  steps: lots\n").status(),
                "training.steps must be a non-negative integer, got \"lots\" (line 2)");
  ExpectInvalid(ParseJobSpec("training:\n  steps: -5\n").status(), "training.steps");
  ExpectInvalid(ParseJobSpec("training:\n  optimizer: {learning_rate: fast}\n").status(),
                "training.optimizer.learning_rate must be a number");
  ExpectInvalid(ParseJobSpec("training:\n  consistency: sync\n").status(), "did you mean SYNC?");
  ExpectInvalid(ParseJobSpec("model: mlp\n").status(), "model must be a mapping");
  ExpectInvalid(ParseJobSpec("name: [a, b]\n").status(), "name must be a single value");
  ExpectInvalid(ParseJobSpec("name: a\nname: b\n").status(), "given twice");
  ExpectInvalid(ParseJobSpec("{\"training\": {\"steps\": \"many\"}}").status(), "training.steps");
}

TEST(ParseJobSpecTest, YamlInfinityBecomesNonFinite) {
  absl::StatusOr<JobSpec> spec = ParseJobSpec("training: {optimizer: {learning_rate: .inf}}\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(std::isinf(spec->training().optimizer().learning_rate()));
}

TEST(ReadJobSpecFileTest, ReadsAndReportsMissingFile) {
  const std::string path = ::testing::TempDir() + "/spec.yaml";
  {
    std::ofstream out(path);
    out << kYaml;
  }
  absl::StatusOr<JobSpec> spec = ReadJobSpecFile(path);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(*spec, EqualsProto(ExpectedSpec()));

  absl::StatusOr<JobSpec> missing = ReadJobSpecFile(::testing::TempDir() + "/nope.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.json"));

  const std::string bad = ::testing::TempDir() + "/bad.yaml";
  {
    std::ofstream out(bad);
    out << "name: x\nbogus: 1\n";
  }
  absl::Status status = ReadJobSpecFile(bad).status();
  ExpectInvalid(status, "bad.yaml");
  ExpectInvalid(status, "unknown field \"bogus\" (line 2)");
}

TEST(ApplyJobDefaultsTest, FillsUnsetFields) {
  JobSpec spec;
  ApplyJobDefaults(&spec);
  EXPECT_EQ(spec.name(), "job");
  EXPECT_EQ(spec.model().kind(), "gpt");
  EXPECT_EQ(spec.model().tokenizer(), "byte");
  EXPECT_EQ(spec.model().context(), 64u);
  EXPECT_EQ(spec.model().layers(), 4u);
  EXPECT_EQ(spec.model().heads(), 4u);
  EXPECT_EQ(spec.model().width(), 128u);
  EXPECT_FLOAT_EQ(spec.model().dropout(), 0.0f);
  EXPECT_FLOAT_EQ(spec.data().validation_fraction(), 0.1f);
  EXPECT_EQ(spec.training().steps(), 1000u);
  EXPECT_EQ(spec.training().batch_size(), 12u);
  EXPECT_EQ(spec.training().optimizer().kind(), ADAMW);
  EXPECT_FLOAT_EQ(spec.training().optimizer().learning_rate(), 1e-3f);
  EXPECT_FLOAT_EQ(spec.training().optimizer().beta1(), 0.9f);
  EXPECT_FLOAT_EQ(spec.training().optimizer().beta2(), 0.95f);
  EXPECT_FLOAT_EQ(spec.training().optimizer().epsilon(), 1e-8f);
  EXPECT_EQ(spec.training().consistency(), SYNC);
  EXPECT_EQ(spec.training().seed(), 1u);
  EXPECT_EQ(spec.training().report_every(), 10u);
  EXPECT_EQ(spec.training().eval_batches(), 20u);
  EXPECT_EQ(spec.training().grad_accumulation_steps(), 1u);
  EXPECT_EQ(spec.training().step_timeout_seconds(), 600u);  // 0 set explicitly: never.
  EXPECT_EQ(spec.training().sample_length(), 200u);
  EXPECT_EQ(spec.training().wire_dtype(), BF16);  // GPTs exchange bf16 by default.
  EXPECT_EQ(spec.num_servers(), 1u);
  EXPECT_EQ(spec.num_workers(), 1u);
  EXPECT_TRUE(spec.data().path().empty());

  JobSpec mlp;
  mlp.mutable_model()->set_kind("mlp");
  ApplyJobDefaults(&mlp);
  EXPECT_EQ(mlp.model().context(), 8u);
  EXPECT_EQ(mlp.model().embedding_dim(), 24u);
  EXPECT_EQ(mlp.model().hidden_dim(), 256u);
  EXPECT_EQ(mlp.model().layers(), 0u);
  EXPECT_EQ(mlp.training().wire_dtype(), FP32);
}

TEST(ApplyJobDefaultsTest, KeepsSetFieldsAndDefaultsMomentum) {
  JobSpec spec = ExpectedSpec();
  JobSpec copy = spec;
  ApplyJobDefaults(&copy);
  // Only unset fields change.
  copy.mutable_model()->clear_tokenizer();
  copy.mutable_data()->clear_validation_fraction();
  copy.mutable_training()->clear_eval_batches();
  copy.mutable_training()->clear_grad_accumulation_steps();
  copy.mutable_training()->clear_step_timeout_seconds();
  EXPECT_EQ(copy.replicas(), spec.num_servers() >= 2 ? 2u : 1u);
  copy.clear_replicas();
  EXPECT_THAT(copy, EqualsProto(spec));

  JobSpec momentum;
  momentum.mutable_training()->mutable_optimizer()->set_kind(MOMENTUM);
  ApplyJobDefaults(&momentum);
  EXPECT_FLOAT_EQ(momentum.training().optimizer().momentum(), 0.9f);
  EXPECT_FLOAT_EQ(momentum.training().optimizer().learning_rate(), 0.1f);
}

TEST(FillVocabularyTest, CharTokenizerGetsTheCorpusBytes) {
  const std::string path = ::testing::TempDir() + "/vocab.txt";
  std::ofstream(path) << "hello world\n";
  JobSpec spec = ValidSpec();
  spec.mutable_data()->set_path(path);
  spec.mutable_model()->set_tokenizer("char");
  ExpectInvalid(ValidateJobSpec(spec), "model.vocabulary");
  ASSERT_TRUE(FillVocabulary(&spec).ok());
  EXPECT_EQ(spec.model().vocabulary(), "\n dehlorw");
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec);
  spec.mutable_model()->set_vocabulary("ba");
  ExpectInvalid(ValidateJobSpec(spec), "ascending");
  spec.mutable_model()->clear_vocabulary();
  spec.mutable_data()->set_path(path + ".missing");
  EXPECT_EQ(FillVocabulary(&spec).code(), absl::StatusCode::kNotFound);
  JobSpec bytes = ValidSpec();
  ASSERT_TRUE(FillVocabulary(&bytes).ok());
  EXPECT_TRUE(bytes.model().vocabulary().empty());
}

TEST(ValidateJobSpecTest, GptShape) {
  JobSpec spec = ValidSpec();
  spec.mutable_model()->set_heads(3);
  ExpectInvalid(ValidateJobSpec(spec), "model.heads (3) must divide model.width (128)");
  spec = ValidSpec();
  spec.mutable_model()->set_dropout(1.0f);
  ExpectInvalid(ValidateJobSpec(spec), "model.dropout");
  spec = ValidSpec();
  spec.mutable_model()->set_tokenizer("wordpiece");
  ExpectInvalid(ValidateJobSpec(spec), "model.tokenizer");
}

TEST(FillVocabularyTest, BpeTokenizerTrainsOnTheTrainingSplit) {
  std::string why;
  if (!BpeAvailable(&why)) GTEST_SKIP() << "SKIPPED: " << why;
  JobSpec spec = ValidSpec();
  spec.mutable_data()->set_path(std::string(std::getenv("TEST_SRCDIR")) +
                                "/psrv/tests/testdata/shakespeare_200k.txt");
  spec.mutable_model()->set_tokenizer("bpe");
  ApplyJobDefaults(&spec);
  EXPECT_EQ(spec.model().vocab_size(), 8192u);  // The default.
  ExpectInvalid(ValidateJobSpec(spec), "model.vocabulary must hold the SentencePiece model");
  spec.mutable_model()->set_vocab_size(600);
  ASSERT_TRUE(FillVocabulary(&spec).ok());
  EXPECT_GT(spec.model().vocabulary().size(), 1000u);
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec);

  // The model and its size must agree, and the model must be one.
  JobSpec other = spec;
  other.mutable_model()->set_vocab_size(601);
  ExpectInvalid(ValidateJobSpec(other),
                "model.vocabulary is a BPE model of 600 pieces but model.vocab_size is 601");
  other.mutable_model()->set_vocab_size(100);
  ExpectInvalid(ValidateJobSpec(other), "model.vocab_size must be 259..65536");
  other = spec;
  other.mutable_model()->set_vocabulary("\x0a\x03" "abc not a model");
  ExpectInvalid(ValidateJobSpec(other), "model.vocabulary: not a SentencePiece model");
  // A byte tokenizer has no vocab_size.
  other = ValidSpec();
  other.mutable_model()->set_vocab_size(600);
  ExpectInvalid(ValidateJobSpec(other), "model.vocab_size is for tokenizers");

  // More pieces than the text can make; a file that is not here; token files.
  other = spec;
  other.mutable_model()->clear_vocabulary();
  other.mutable_model()->set_vocab_size(60000);
  ExpectInvalid(FillVocabulary(&other), "a smaller model.vocab_size");
  other.mutable_model()->set_vocab_size(600);
  other.mutable_data()->set_path("/nonexistent/corpus.txt");
  EXPECT_EQ(FillVocabulary(&other).code(), absl::StatusCode::kNotFound);
  other = spec;
  other.mutable_model()->clear_vocabulary();
  other.mutable_data()->set_format("nanogpt_bin");
  ExpectInvalid(FillVocabulary(&other), "data.format must be \"text\"");
}

TEST(ValidateJobSpecTest, AdamWAndScheduleAndClipping) {
  JobSpec spec = ValidSpec();
  spec.mutable_training()->mutable_optimizer()->set_beta2(1.0f);
  ExpectInvalid(ValidateJobSpec(spec), "training.optimizer.beta2 must be in [0, 1)");
  spec = ValidSpec();
  spec.mutable_training()->mutable_optimizer()->set_weight_decay(-0.1f);
  ExpectInvalid(ValidateJobSpec(spec), "training.optimizer.weight_decay");
  spec = ValidSpec();
  spec.mutable_training()->mutable_optimizer()->set_min_learning_rate(0.5f);
  ExpectInvalid(ValidateJobSpec(spec), "training.optimizer.min_learning_rate");
  spec = ValidSpec();
  spec.mutable_training()->set_grad_clip(-1.0f);
  ExpectInvalid(ValidateJobSpec(spec), "training.grad_clip");
  spec = ValidSpec();
  spec.mutable_data()->set_validation_fraction(0.9f);
  ExpectInvalid(ValidateJobSpec(spec), "data.validation_fraction");
}

TEST(ValidateJobSpecTest, ValidSpecs) {
  EXPECT_TRUE(ValidateJobSpec(ValidSpec()).ok()) << ValidateJobSpec(ValidSpec());
  JobSpec expected = ExpectedSpec();
  ApplyJobDefaults(&expected);
  EXPECT_TRUE(ValidateJobSpec(expected).ok()) << ValidateJobSpec(expected);
}

TEST(ValidateJobSpecTest, ReplicasNeedAsManyServers) {
  JobSpec spec = ValidSpec();
  spec.set_num_servers(1);
  spec.set_replicas(2);
  ExpectInvalid(ValidateJobSpec(spec), "replicas");
  spec.set_replicas(3);
  spec.set_num_servers(4);
  ExpectInvalid(ValidateJobSpec(spec), "replicas");
  spec.set_replicas(2);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  JobSpec defaulted;
  defaulted.set_num_servers(3);
  ApplyJobDefaults(&defaulted);
  EXPECT_EQ(defaulted.replicas(), 2u);
}

// A pipeline job: data x pipeline workers, a gpt with enough layers, SYNC, micro-batches that are
// the gradient accumulation.
JobSpec PipelineSpec(uint32_t data, uint32_t pipeline) {
  JobSpec spec;
  spec.mutable_data()->set_path("/tmp/text.txt");
  spec.set_num_workers(data * pipeline);
  spec.mutable_parallelism()->set_pipeline(pipeline);
  spec.mutable_parallelism()->set_micro_batches(4);
  ApplyJobDefaults(&spec);
  return spec;
}

TEST(ValidateJobSpecTest, Parallelism) {
  JobSpec spec = PipelineSpec(2, 2);
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec);
  EXPECT_EQ(spec.parallelism().data(), 2u);
  EXPECT_EQ(spec.parallelism().schedule(), ONE_F_ONE_B);
  EXPECT_EQ(spec.parallelism().on_stage_loss(), REFORM_GROUP);
  EXPECT_EQ(PipelineStages(spec), 2u);
  spec.mutable_parallelism()->set_on_stage_loss(static_cast<StageLossPolicy>(7));
  ExpectInvalid(ValidateJobSpec(spec),
                "parallelism.on_stage_loss must be REFORM_GROUP or RESTART_FROM_CHECKPOINT, got 7");
  spec.mutable_parallelism()->set_on_stage_loss(RESTART_FROM_CHECKPOINT);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  EXPECT_EQ(DataGroups(spec), 2u);
  spec.set_num_workers(5);
  ExpectInvalid(ValidateJobSpec(spec), "num_workers (5) must be parallelism.data x parallelism.pipeline (2 x 2 = 4)");
  spec = PipelineSpec(1, 5);  // The default gpt has 4 layers.
  ExpectInvalid(ValidateJobSpec(spec), "parallelism.pipeline (5) cannot exceed model.layers (4)");
  spec = ValidMlpSpec();
  spec.set_num_workers(2);
  spec.mutable_parallelism()->set_pipeline(2);
  ApplyJobDefaults(&spec);
  ExpectInvalid(ValidateJobSpec(spec), "needs a gpt model");
  spec = PipelineSpec(1, 2);
  spec.mutable_training()->set_consistency(ASYNC);
  ExpectInvalid(ValidateJobSpec(spec), "needs training.consistency SYNC");
  spec = PipelineSpec(1, 2);
  spec.mutable_training()->set_grad_accumulation_steps(2);
  ExpectInvalid(ValidateJobSpec(spec), "the micro-batches are the gradient accumulation");
  spec = PipelineSpec(1, 2);
  spec.mutable_parallelism()->set_micro_batches(0);
  ExpectInvalid(ValidateJobSpec(spec), "parallelism.micro_batches must be in [1, 4096]");
  // Without a pipeline, parallelism is empty and needs nothing; set, it must agree.
  spec = ValidSpec();
  EXPECT_FALSE(spec.has_parallelism());
  EXPECT_EQ(PipelineStages(spec), 1u);
  EXPECT_EQ(DataGroups(spec), spec.num_workers());
  spec.mutable_parallelism()->set_data(3);
  ExpectInvalid(ValidateJobSpec(spec), "parallelism.data (3) must equal num_workers (1)");
}

TEST(ValidateJobSpecTest, MissingDataPath) {
  JobSpec spec = ValidSpec();
  spec.mutable_data()->clear_path();
  ExpectInvalid(ValidateJobSpec(spec), "data.path");
}

TEST(ValidateJobSpecTest, EmptyName) {
  JobSpec spec = ValidSpec();
  spec.clear_name();
  ExpectInvalid(ValidateJobSpec(spec), "name");
}

// Job names end up in paths and labels: the shared name rule (common/names.h). Before, any name
// without control characters passed.
TEST(ValidateJobSpecTest, NameFollowsTheNameRule) {
  JobSpec spec = ValidSpec();
  spec.set_name("../etc");
  ExpectInvalid(ValidateJobSpec(spec), "name \"../etc\" may contain only");
  spec.set_name("a b");
  ExpectInvalid(ValidateJobSpec(spec), "may contain only");
  spec.set_name("run-1.v2_x");
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
}

// Every server resolves the directory itself: a relative one means a different place on each.
TEST(ValidateJobSpecTest, CheckpointDirectoryMustBeAbsolute) {
  JobSpec spec = ValidSpec();
  spec.mutable_checkpoint()->set_directory("checkpoints");
  ExpectInvalid(ValidateJobSpec(spec), "checkpoint.directory must be an absolute path");
  spec.mutable_checkpoint()->set_directory("/data/checkpoints");
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
}

// One row per integer rule: the field, a setter, the lowest and highest allowed values.
struct IntRule {
  std::string field;
  std::function<void(JobSpec*, uint64_t)> set;
  uint64_t lo;
  uint64_t hi;
  bool mlp = false;  // The rule is for the mlp model.
};

class IntRuleTest : public ::testing::TestWithParam<IntRule> {};

TEST_P(IntRuleTest, BoundsAreInclusive) {
  const IntRule& rule = GetParam();
  auto ValidSpec = [&rule] { return rule.mlp ? ValidMlpSpec() : ::psrv::ValidSpec(); };
  for (uint64_t ok : {rule.lo, rule.hi}) {
    JobSpec spec = ValidSpec();
    rule.set(&spec, ok);
    EXPECT_TRUE(ValidateJobSpec(spec).ok())
        << rule.field << "=" << ok << ": " << ValidateJobSpec(spec);
  }
  if (rule.lo > 0) {
    JobSpec spec = ValidSpec();
    rule.set(&spec, rule.lo - 1);
    ExpectInvalid(ValidateJobSpec(spec), rule.field + " must be in [" + std::to_string(rule.lo) +
                                             ", " + std::to_string(rule.hi) + "], got " +
                                             std::to_string(rule.lo - 1));
  }
  JobSpec spec = ValidSpec();
  rule.set(&spec, rule.hi + 1);
  ExpectInvalid(ValidateJobSpec(spec), rule.field);
  ExpectInvalid(ValidateJobSpec(spec), std::to_string(rule.hi + 1));
}

INSTANTIATE_TEST_SUITE_P(
    AllIntegerRules, IntRuleTest,
    ::testing::Values(
        IntRule{"training.steps",
                [](JobSpec* s, uint64_t v) { s->mutable_training()->set_steps(v); }, 1, 1000000000},
        IntRule{"training.batch_size",
                [](JobSpec* s, uint64_t v) { s->mutable_training()->set_batch_size(v); }, 1, 65536},
        IntRule{"num_servers", [](JobSpec* s, uint64_t v) { s->set_num_servers(v); }, 1, 64},
        IntRule{"num_workers", [](JobSpec* s, uint64_t v) { s->set_num_workers(v); }, 1, 64},
        IntRule{"model.context", [](JobSpec* s, uint64_t v) { s->mutable_model()->set_context(v); },
                1, 64, /*mlp=*/true},
        IntRule{"model.embedding_dim",
                [](JobSpec* s, uint64_t v) { s->mutable_model()->set_embedding_dim(v); }, 1, 1024,
                /*mlp=*/true},
        IntRule{"model.hidden_dim",
                [](JobSpec* s, uint64_t v) { s->mutable_model()->set_hidden_dim(v); }, 1, 16384,
                /*mlp=*/true},
        IntRule{"model.context",
                [](JobSpec* s, uint64_t v) { s->mutable_model()->set_context(v); }, 1, 4096},
        IntRule{"model.layers", [](JobSpec* s, uint64_t v) { s->mutable_model()->set_layers(v); },
                1, 96},
        IntRule{"training.grad_accumulation_steps",
                [](JobSpec* s, uint64_t v) {
                  s->mutable_training()->set_grad_accumulation_steps(v);
                },
                1, 4096},
        IntRule{"training.eval_batches",
                [](JobSpec* s, uint64_t v) { s->mutable_training()->set_eval_batches(v); }, 1,
                10000},
        IntRule{"training.sample_length",
                [](JobSpec* s, uint64_t v) { s->mutable_training()->set_sample_length(v); }, 0,
                100000}),
    [](const ::testing::TestParamInfo<IntRule>& info) {
      std::string name = info.param.field + (info.param.mlp ? "_mlp" : "");
      for (char& c : name) {
        if (c == '.') c = '_';
      }
      return name;
    });

TEST(ValidateJobSpecTest, ReportEvery) {
  JobSpec spec = ValidSpec();
  spec.mutable_training()->set_report_every(0);
  ExpectInvalid(ValidateJobSpec(spec), "training.report_every must be at least 1");
  spec.mutable_training()->set_report_every(1);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
}

TEST(ValidateJobSpecTest, LearningRate) {
  for (float bad : {0.0f, -0.1f, 10.5f, std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    JobSpec spec = ValidSpec();
    spec.mutable_training()->mutable_optimizer()->set_learning_rate(bad);
    ExpectInvalid(ValidateJobSpec(spec), "training.optimizer.learning_rate");
  }
  for (float good : {1e-6f, 10.0f}) {
    JobSpec spec = ValidSpec();
    spec.mutable_training()->mutable_optimizer()->set_learning_rate(good);
    EXPECT_TRUE(ValidateJobSpec(spec).ok()) << good;
  }
}

TEST(ValidateJobSpecTest, Momentum) {
  for (float bad : {-0.1f, 1.0f, 2.0f, std::numeric_limits<float>::quiet_NaN()}) {
    JobSpec spec = ValidSpec();
    spec.mutable_training()->mutable_optimizer()->set_kind(MOMENTUM);
    spec.mutable_training()->mutable_optimizer()->set_momentum(bad);
    ExpectInvalid(ValidateJobSpec(spec), "training.optimizer.momentum must be in [0, 1)");
  }
  for (float good : {0.0f, 0.99f}) {
    JobSpec spec = ValidSpec();
    spec.mutable_training()->mutable_optimizer()->set_kind(MOMENTUM);
    spec.mutable_training()->mutable_optimizer()->set_momentum(good);
    EXPECT_TRUE(ValidateJobSpec(spec).ok()) << good;
  }
}

TEST(ValidateJobSpecTest, ModelKind) {
  JobSpec spec = ValidSpec();
  spec.mutable_model()->set_kind("transformer");
  ExpectInvalid(ValidateJobSpec(spec),
                "model.kind must be \"gpt\" or \"mlp\", got \"transformer\"");
}

TEST(ValidateJobSpecTest, StalenessAndBackupWorkers) {
  JobSpec spec = ValidSpec();
  spec.mutable_training()->set_staleness(2);
  ExpectInvalid(ValidateJobSpec(spec), "training.staleness is for training.consistency SSP");
  spec.mutable_training()->set_consistency(SSP);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  spec = ValidSpec();
  spec.set_num_workers(4);
  spec.mutable_training()->set_aggregate_first(3);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  spec.mutable_training()->set_aggregate_first(5);
  ExpectInvalid(ValidateJobSpec(spec),
                "training.aggregate_first (5) must be at most num_workers (4)");
  spec.mutable_training()->set_aggregate_first(3);
  spec.mutable_training()->set_consistency(ASYNC);
  ExpectInvalid(ValidateJobSpec(spec),
                "training.aggregate_first (backup workers) is for training.consistency SYNC");
}

TEST(ValidateJobSpecTest, UntiedEmbeddings) {
  JobSpec spec = ValidSpec();
  spec.mutable_model()->set_tie_embeddings(false);
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec);
  absl::StatusOr<std::vector<TableSpec>> tables = ModelTables(spec.model(), 1);
  ASSERT_TRUE(tables.ok());
  EXPECT_EQ(tables->back().name(), "lm_head");
  EXPECT_EQ(tables->front().name(), "wte");
  EXPECT_EQ(tables->front().sparse_row_width(), spec.model().width());
  spec.mutable_model()->set_tie_embeddings(true);
  EXPECT_EQ(ModelTables(spec.model(), 1)->front().sparse_row_width(), 0u);
  JobSpec pipeline = PipelineSpec(2, 2);
  pipeline.mutable_model()->set_tie_embeddings(false);
  ExpectInvalid(ValidateJobSpec(pipeline), "parallelism.pipeline > 1 needs model.tie_embeddings");
  JobSpec mlp = ValidSpec();
  mlp.mutable_model()->set_kind("mlp");
  ApplyJobDefaults(&mlp);
  mlp.mutable_model()->set_tie_embeddings(false);
  ExpectInvalid(ValidateJobSpec(mlp), "model.tie_embeddings is for gpt models");
}

TEST(ValidateJobSpecTest, TokenFilesNeedTheIdsTokenizer) {
  JobSpec spec = ValidSpec();
  spec.mutable_data()->set_format("llmc_bin");
  ExpectInvalid(ValidateJobSpec(spec), "data.format \"llmc_bin\" needs model.tokenizer \"ids\"");
  spec.mutable_model()->set_tokenizer("ids");
  spec.mutable_model()->clear_vocabulary();
  ExpectInvalid(ValidateJobSpec(spec), "model.vocab_size must be 1..65536");
  spec.mutable_model()->set_vocab_size(50304);
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec);
  spec.mutable_data()->set_format("parquet");
  ExpectInvalid(ValidateJobSpec(spec), "data.format must be");
  spec = ValidSpec();
  spec.mutable_data()->set_validation_path("/data/val.bin");
  ExpectInvalid(ValidateJobSpec(spec), "data.validation_path is for token formats");
}

TEST(ValidateJobSpecTest, Compression) {
  JobSpec spec = ValidSpec();
  spec.mutable_training()->mutable_compression()->set_kind(TOP_K);
  ExpectInvalid(ValidateJobSpec(spec), "training.compression.fraction must be in (0, 1]");
  spec.mutable_training()->mutable_compression()->set_fraction(1.5f);
  ExpectInvalid(ValidateJobSpec(spec), "training.compression.fraction must be in (0, 1]");
  spec.mutable_training()->mutable_compression()->set_fraction(0.01f);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  spec.mutable_training()->mutable_compression()->set_kind(COMPRESSION_NONE);
  ExpectInvalid(ValidateJobSpec(spec), "is for training.compression.kind TOP_K");
}

TEST(ValidateJobSpecTest, Enums) {
  JobSpec spec = ValidSpec();
  spec.mutable_training()->set_consistency(CONSISTENCY_UNSPECIFIED);
  ExpectInvalid(ValidateJobSpec(spec), "training.consistency must be SYNC, ASYNC or SSP");
  spec = ValidSpec();
  spec.mutable_training()->set_consistency(ASYNC);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());

  spec = ValidSpec();
  spec.mutable_training()->mutable_optimizer()->set_kind(OPTIMIZER_UNSPECIFIED);
  ExpectInvalid(ValidateJobSpec(spec), "training.optimizer.kind must be SGD, MOMENTUM or ADAMW");

  spec = ValidSpec();
  spec.mutable_training()->set_wire_dtype(FP16);
  ExpectInvalid(ValidateJobSpec(spec), "FP16 is not supported yet");
  spec = ValidSpec();
  spec.mutable_training()->set_wire_dtype(BF16);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  spec = ValidSpec();
  spec.mutable_training()->set_wire_dtype(DTYPE_UNSPECIFIED);
  ExpectInvalid(ValidateJobSpec(spec), "training.wire_dtype must be FP32 or BF16");
}

TEST(ValidateJobSpecTest, ParsedThenDefaultedSpecValidates) {
  absl::StatusOr<JobSpec> spec = ParseJobSpec("data: {path: /tmp/x}\ntraining: {steps: 5}\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ApplyJobDefaults(&*spec);
  EXPECT_TRUE(ValidateJobSpec(*spec).ok()) << ValidateJobSpec(*spec);
  EXPECT_EQ(spec->training().steps(), 5u);
}

}  // namespace
}  // namespace psrv
