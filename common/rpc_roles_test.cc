// The role table covers every RPC of every service in proto/ (and only those, plus the health and
// reflection services), and docs/ARCHITECTURE.md shows exactly the table in the code.
#include "common/rpc_roles.h"

#include <dirent.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <google/protobuf/descriptor.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "proto/admin.pb.h"
#include "proto/coordinator.pb.h"
#include "proto/coordinator_state.pb.h"
#include "proto/parameter_server.pb.h"
#include "proto/pipeline.pb.h"

namespace psrv {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::string Roles(const RpcRoleRule& rule) { return absl::StrJoin(rule.roles, ", "); }

// Every method of every service of the .proto files in proto/, as "/package.Service/Method".
std::set<std::string> ProtoMethods() {
  // Linking the generated code registers the files with the generated pool.
  (void)GetStatusRequest::descriptor();
  (void)SubmitJobRequest::descriptor();
  (void)PullRequest::descriptor();
  (void)JobRecord::descriptor();
  (void)StageTensor::descriptor();
  std::set<std::string> methods;
  DIR* dir = opendir("proto");
  EXPECT_NE(dir, nullptr) << "no proto/ in the runfiles";
  if (dir == nullptr) return methods;
  int files = 0;
  while (dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (!absl::EndsWith(name, ".proto")) continue;
    ++files;
    const google::protobuf::FileDescriptor* file =
        google::protobuf::DescriptorPool::generated_pool()->FindFileByName("proto/" + name);
    EXPECT_NE(file, nullptr) << "proto/" << name << " is not linked into this test: add its "
                             << "cc_grpc_proto to the test's deps";
    if (file == nullptr) continue;
    for (int s = 0; s < file->service_count(); ++s) {
      const google::protobuf::ServiceDescriptor* service = file->service(s);
      for (int m = 0; m < service->method_count(); ++m) {
        methods.insert(absl::StrCat("/", service->full_name(), "/", service->method(m)->name()));
      }
    }
  }
  closedir(dir);
  EXPECT_GE(files, 3);
  return methods;
}

TEST(RpcRolesTest, EveryProtoMethodHasARuleAndEveryRuleAMethod) {
  const std::set<std::string> methods = ProtoMethods();
  ASSERT_FALSE(methods.empty());
  for (const std::string& method : methods) {
    const RpcRoleRule* rule = FindRpcRoleRule(method);
    ASSERT_NE(rule, nullptr) << method << " has no row in common/rpc_roles.cc";
    EXPECT_FALSE(rule->roles.empty()) << method;
  }
  for (const RpcRoleRule& rule : RpcRoleTable()) {
    const std::string method = rule.method;
    if (absl::StartsWith(method, "/grpc.")) continue;  // Health and reflection: not in proto/.
    EXPECT_TRUE(methods.count(method)) << method << " is in the table but in no service of proto/";
  }
}

TEST(RpcRolesTest, RolesAreKnownAndMethodsUnique) {
  const std::set<std::string> known = {kRoleViewer, kRoleOperator, kRoleCoordinator, kRoleServer,
                                       kRoleWorker, kAnyCertificate};
  std::set<std::string> seen;
  for (const RpcRoleRule& rule : RpcRoleTable()) {
    EXPECT_TRUE(seen.insert(rule.method).second) << "two rows for " << rule.method;
    for (const std::string& role : rule.roles) EXPECT_TRUE(known.count(role)) << role;
  }
  EXPECT_EQ(FindRpcRoleRule("/psrv.Coordinator/NoSuchMethod"), nullptr);
  EXPECT_EQ(FindRpcRoleRule(""), nullptr);
}

TEST(RpcRolesTest, ArchitectureDocShowsTheSameTable) {
  const std::string doc = ReadFile("docs/ARCHITECTURE.md");
  ASSERT_FALSE(doc.empty()) << "docs/ARCHITECTURE.md is not in the runfiles";
  const size_t begin = doc.find("<!-- rpc-roles:begin -->");
  const size_t end = doc.find("<!-- rpc-roles:end -->");
  ASSERT_NE(begin, std::string::npos) << "no <!-- rpc-roles:begin --> marker";
  ASSERT_NE(end, std::string::npos) << "no <!-- rpc-roles:end --> marker";
  // Rows "| `/psrv.Coordinator/SubmitJob` | operator |", in the order of the code.
  std::vector<std::pair<std::string, std::string>> doc_rows;
  for (absl::string_view line : absl::StrSplit(doc.substr(begin, end - begin), '\n')) {
    if (!absl::ConsumePrefix(&line, "| `")) continue;
    std::vector<std::string> cells = absl::StrSplit(line, '|');
    ASSERT_GE(cells.size(), 2u) << line;
    std::string method(absl::StripSuffix(absl::StripAsciiWhitespace(cells[0]), "`"));
    doc_rows.emplace_back(method, std::string(absl::StripAsciiWhitespace(cells[1])));
  }
  std::vector<std::pair<std::string, std::string>> code_rows;
  for (const RpcRoleRule& rule : RpcRoleTable()) code_rows.emplace_back(rule.method, Roles(rule));
  std::string expected;
  for (const auto& [method, roles] : code_rows) {
    absl::StrAppend(&expected, "| `", method, "` | ", roles, " |\n");
  }
  EXPECT_EQ(doc_rows, code_rows) << "docs/ARCHITECTURE.md's role table should read:\n" << expected;
}

}  // namespace
}  // namespace psrv
