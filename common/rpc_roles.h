// Who may call what: the one table of every gRPC method the processes serve and the roles allowed
// to call it. A caller's role is its client certificate's subject OU (several OUs: several roles).
// docs/ARCHITECTURE.md ("Roles") shows the same table; common/rpc_roles_test.cc keeps the two equal
// and checks that every method of every service in proto/ has a row.
#ifndef PSRV_COMMON_RPC_ROLES_H_
#define PSRV_COMMON_RPC_ROLES_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace psrv {

// The roles, as certificate OUs.
inline constexpr char kRoleViewer[] = "viewer";          // Reads status: psctl list/status/shards.
inline constexpr char kRoleOperator[] = "operator";      // Runs jobs: submit, cancel, checkpoint.
inline constexpr char kRoleCoordinator[] = "coordinator";  // ps_coordinator calling servers.
inline constexpr char kRoleServer[] = "server";          // ps_server: membership, replication.
inline constexpr char kRoleWorker[] = "worker";          // ps_worker: membership, pull, push.
// In a rule: any certificate the cluster CA signed, whatever its OU (health checks, reflection).
inline constexpr char kAnyCertificate[] = "any";

struct RpcRoleRule {
  const char* method;               // Full gRPC name, "/psrv.Coordinator/SubmitJob".
  std::vector<std::string> roles;   // Allowed roles, or {kAnyCertificate}.
};

// Every rule, in the order of docs/ARCHITECTURE.md.
const std::vector<RpcRoleRule>& RpcRoleTable();

// The rule of `method`, or null for a method no one may call.
const RpcRoleRule* FindRpcRoleRule(absl::string_view method);

}  // namespace psrv

#endif  // PSRV_COMMON_RPC_ROLES_H_
