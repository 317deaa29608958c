// --device selection: parsing, and where each choice puts the model with and without a GPU, in
// the CUDA build and in the CPU-only build (--define=cuda=off). Runs without a GPU.
#include "worker/cuda/device_model.h"

#include <string>

#include "gtest/gtest.h"
#include "worker/model/gpt_model.h"
#include "worker/model/mlp_model.h"

namespace psrv {
namespace {

ModelSpec GptSpec() {
  ModelSpec spec;
  spec.set_kind("gpt");
  spec.set_layers(2);
  spec.set_heads(2);
  spec.set_width(16);
  spec.set_context(8);
  return spec;
}

ModelSpec MlpSpec() {
  ModelSpec spec;
  spec.set_kind("mlp");
  spec.set_context(3);
  spec.set_embedding_dim(4);
  spec.set_hidden_dim(8);
  return spec;
}

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

TEST(ParseDeviceTest, KnownNames) {
  EXPECT_EQ(*ParseDevice("auto"), Device::kAuto);
  EXPECT_EQ(*ParseDevice("cuda"), Device::kCuda);
  EXPECT_EQ(*ParseDevice("cpu"), Device::kCpu);
  for (Device d : {Device::kAuto, Device::kCuda, Device::kCpu}) {
    EXPECT_EQ(*ParseDevice(DeviceFlagName(d)), d);
  }
}

TEST(ParseDeviceTest, UnknownNameIsInvalidArgument) {
  for (const char* name : {"", "gpu", "CUDA", "cuda:0", "tpu"}) {
    absl::StatusOr<Device> device = ParseDevice(name);
    EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_TRUE(Contains(device.status().message(), "auto, cuda, cpu")) << device.status();
  }
}

TEST(ParseCudaAttentionTest, KnownAndUnknownNames) {
  CudaModelOptions options;
  ASSERT_TRUE(ParseCudaAttention("flash", &options).ok());
  EXPECT_TRUE(options.flash_attention);
  EXPECT_FALSE(options.flash_fp32);
  EXPECT_STREQ(CudaAttentionSuffix(options), ", flash attention");
  ASSERT_TRUE(ParseCudaAttention("flash_fp32", &options).ok());
  EXPECT_TRUE(options.flash_attention);
  EXPECT_TRUE(options.flash_fp32);
  EXPECT_STREQ(CudaAttentionSuffix(options), ", flash attention (fp32)");
  ASSERT_TRUE(ParseCudaAttention("materialized", &options).ok());
  EXPECT_FALSE(options.flash_attention);
  EXPECT_FALSE(options.flash_fp32);
  EXPECT_STREQ(CudaAttentionSuffix(options), "");
  EXPECT_EQ(CudaModelSuffix(options), "");
  options.recompute_gelu = false;
  EXPECT_EQ(CudaModelSuffix(options), ", GELU output kept");
  options.flash_attention = true;
  EXPECT_EQ(CudaModelSuffix(options), ", flash attention, GELU output kept");
  options.gelu_epilogue = true;
  EXPECT_EQ(CudaModelSuffix(options), ", flash attention, GELU output kept, GELU in the epilogue");
  options.cuda_graph = true;
  EXPECT_EQ(CudaModelSuffix(options),
            ", flash attention, GELU output kept, GELU in the epilogue, CUDA graph");
  options = CudaModelOptions();
  for (const char* name : {"", "Flash", "fused", "materialised"}) {
    const absl::Status status = ParseCudaAttention(name, &options);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_TRUE(Contains(status.message(), "materialized, flash, flash_fp32")) << status;
  }
}

TEST(DeviceModelTest, CpuAlwaysGivesTheCpuModel) {
  DeviceChoice choice;
  auto gpt = CreateLanguageModelOnDevice(GptSpec(), 11, Device::kCpu, &choice);
  ASSERT_TRUE(gpt.ok()) << gpt.status();
  EXPECT_NE(dynamic_cast<GptModel*>(gpt->get()), nullptr);
  EXPECT_EQ(choice.device, Device::kCpu);
  EXPECT_EQ(choice.description, "cpu");
  EXPECT_TRUE(DeviceModelStatus(**gpt).ok());
  auto mlp = CreateLanguageModelOnDevice(MlpSpec(), 11, Device::kCpu);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_NE(dynamic_cast<MlpModel*>(mlp->get()), nullptr);
}

TEST(DeviceModelTest, AutoFallsBackToCpuWithoutGpu) {
  std::string why_none;
  if (UsableCudaDevices(&why_none) > 0) GTEST_SKIP() << "a GPU is usable here";
  DeviceChoice choice;
  auto model = CreateLanguageModelOnDevice(GptSpec(), 11, Device::kAuto, &choice);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_NE(dynamic_cast<GptModel*>(model->get()), nullptr);
  EXPECT_EQ(choice.device, Device::kCpu);
  EXPECT_TRUE(Contains(choice.description, "auto")) << choice.description;
  EXPECT_TRUE(Contains(choice.description, why_none)) << choice.description;
  std::printf("auto chose: %s\n", choice.description.c_str());
}

TEST(DeviceModelTest, CudaWithoutGpuIsFailedPrecondition) {
  std::string why_none;
  if (UsableCudaDevices(&why_none) > 0) GTEST_SKIP() << "a GPU is usable here";
  auto model = CreateLanguageModelOnDevice(GptSpec(), 11, Device::kCuda);
  ASSERT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition) << model.status();
  const std::string message(model.status().message());
  std::printf("cuda without GPU: %s\n", message.c_str());
  EXPECT_TRUE(Contains(message, "use --device=cpu or auto")) << message;
  if (BuiltWithCuda()) {
    EXPECT_TRUE(Contains(message, "no CUDA GPU found (cudaGetDeviceCount: ")) << message;
  } else {
    EXPECT_TRUE(Contains(message, "built without CUDA (--define=cuda=off)")) << message;
  }
}

TEST(DeviceModelTest, MlpOnCuda) {
  auto model = CreateLanguageModelOnDevice(MlpSpec(), 11, Device::kCuda);
  if (BuiltWithCuda()) {
    // No CUDA MLP, whether or not there is a GPU.
    EXPECT_EQ(model.status().code(), absl::StatusCode::kUnimplemented) << model.status();
    EXPECT_TRUE(Contains(model.status().message(), "mlp")) << model.status();
  } else {
    EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition) << model.status();
  }
  // auto: the CPU MLP, GPU or not.
  DeviceChoice choice;
  auto automatic = CreateLanguageModelOnDevice(MlpSpec(), 11, Device::kAuto, &choice);
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_NE(dynamic_cast<MlpModel*>(automatic->get()), nullptr);
  EXPECT_EQ(choice.device, Device::kCpu);
}

TEST(DeviceModelTest, InvalidSpecsKeepTheirErrors) {
  ModelSpec unknown = GptSpec();
  unknown.set_kind("rnn");
  for (Device d : {Device::kAuto, Device::kCpu}) {
    EXPECT_EQ(CreateLanguageModelOnDevice(unknown, 11, d).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  ModelSpec bad = GptSpec();
  bad.set_heads(3);  // does not divide 16
  for (Device d : {Device::kAuto, Device::kCpu}) {
    EXPECT_EQ(CreateLanguageModelOnDevice(bad, 11, d).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  if (BuiltWithCuda()) {
    EXPECT_EQ(CreateLanguageModelOnDevice(unknown, 11, Device::kCuda).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace psrv
