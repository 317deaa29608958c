// psctl's cluster views: ask the coordinator for the nodes and every server's Admin service for
// its shards, then show tables (client/monitor_views.h) or JSON, once or refreshed.
#include "client/monitor_commands.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <functional>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/monitor_views.h"
#include "client/proto_json.h"
#include "common/format.h"
#include "common/status_macros.h"

namespace psrv {
namespace {

// Every registered server's Admin.GetStatus, asked all at once: one slow or dead server costs one
// timeout, not one each. Fails only if the coordinator cannot list the nodes.
absl::StatusOr<std::vector<ServerReply>> AskServers(const CommandEnv& env,
                                                    const std::string& job_id) {
  CoordinatorClient client = MakeCoordinatorClient(env);
  absl::StatusOr<std::vector<NodeInfo>> nodes = client.ListNodes();
  if (!nodes.ok()) return nodes.status();
  std::vector<NodeInfo> servers;
  for (const NodeInfo& node : *nodes) {
    if (node.role() == SERVER) servers.push_back(node);
  }
  std::vector<std::future<absl::StatusOr<ServerStatus>>> replies;
  for (const NodeInfo& server : servers) {
    replies.push_back(std::async(std::launch::async, [&env, &job_id, address = server.address()] {
      return GetServerStatus(address, job_id, env.timeout);
    }));
  }
  std::vector<ServerReply> results;
  for (std::size_t i = 0; i < servers.size(); ++i) {
    results.push_back(ServerReply{servers[i], replies[i].get()});
  }
  return results;
}

nlohmann::ordered_json ShardsJson(const std::vector<ServerReply>& results) {
  nlohmann::ordered_json out = {{"servers", nlohmann::ordered_json::array()},
                                {"errors", nlohmann::ordered_json::array()}};
  for (const ServerReply& reply : results) {
    if (reply.status.ok()) {
      out["servers"].push_back(ToJsonValue(*reply.status));
    } else {
      out["errors"].push_back({{"node_id", reply.node.node_id()},
                               {"address", reply.node.address()},
                               {"code", absl::StatusCodeToString(reply.status.status().code())},
                               {"error", std::string(reply.status.status().message())}});
    }
  }
  return out;
}

// Shows `frame()` every `interval` until Ctrl-C or `count` frames (0: no limit). On a terminal
// (and unless `append`) each frame replaces the screen, under a title line; otherwise frames follow
// one another. An error is shown in place of a frame and the view goes on. Returns 0, or 1 if the
// last frame was an error.
int Refresh(const CommandEnv& env, const std::string& title, absl::Duration interval, int count,
            bool append, const std::function<absl::StatusOr<std::string>()>& frame) {
  const bool redraw = env.tty && !append;
  bool failed = false;
  for (int n = 0; count == 0 || n < count; ++n) {
    if (n > 0) {
      const absl::Time next = absl::Now() + interval;
      while (absl::Now() < next && !env.interrupted()) absl::SleepFor(absl::Milliseconds(50));
    }
    if (env.interrupted()) break;
    absl::StatusOr<std::string> text = frame();
    failed = !text.ok();
    std::string body = text.ok() ? *text : absl::StrCat("error: ", text.status().message(), "\n");
    if (append) {
      *env.out << body;
    } else {
      const std::string header =
          absl::StrCat(title, " · every ", absl::FormatDuration(interval), " · ",
                       absl::FormatTime("%H:%M:%S", absl::Now(), absl::LocalTimeZone()),
                       " · Ctrl-C stops\n\n");
      if (redraw) *env.out << "\033[H\033[2J";  // Home, clear the screen.
      else if (n > 0) *env.out << "\n";
      *env.out << header << body;
    }
    env.out->flush();
  }
  return failed ? kExitFailure : kExitOk;
}

}  // namespace

int ClusterCommand(const CommandEnv& env, bool json) {
  CoordinatorClient client = MakeCoordinatorClient(env);
  absl::StatusOr<std::vector<NodeInfo>> nodes = client.ListNodes();
  if (!nodes.ok()) return ReportError(env, nodes.status());
  if (json) {
    ListNodesResponse response;
    for (const NodeInfo& node : *nodes) *response.add_nodes() = node;
    *env.out << ToJson(response) << "\n";
    return kExitOk;
  }
  if (nodes->empty()) {
    *env.out << "no nodes registered at " << env.coordinator << "\n";
    return kExitOk;
  }
  const absl::Time now = absl::Now();
  Table table({"ID", "ROLE", "ADDRESS", "HEALTH", "HEARTBEAT", "JOB", "RANK"});
  table.SetRightAligned(4);
  table.SetRightAligned(6);
  for (const NodeInfo& node : *nodes) {
    const bool has_job = !node.job_id().empty();
    table.AddRow({node.node_id(), NodeRole_Name(node.role()), node.address(),
                  NodeHealth_Name(node.health()), FormatAgeSince(node.last_heartbeat_ms(), now),
                  has_job ? node.job_id() : "-",
                  has_job && node.role() == WORKER ? absl::StrCat(node.rank()) : "-"});
  }
  *env.out << table.Render();
  return kExitOk;
}

int ShardsCommand(const CommandEnv& env, const ShardsFlags& flags) {
  if (flags.watch) {
    return Refresh(env, "psctl shards", flags.interval, flags.count, flags.json,
                   [&]() -> absl::StatusOr<std::string> {
                     ASSIGN_OR_RETURN(std::vector<ServerReply> results,
                                      AskServers(env, flags.job_id));
                     if (flags.json) return ShardsJson(results).dump() + "\n";
                     if (results.empty()) {
                       return absl::StrCat("no servers registered at ", env.coordinator, "\n");
                     }
                     return ShardsTable(results, flags.job_id, absl::Now());
                   });
  }
  absl::StatusOr<std::vector<ServerReply>> results = AskServers(env, flags.job_id);
  if (!results.ok()) return ReportError(env, results.status());
  const bool all_failed =
      !results->empty() && std::none_of(results->begin(), results->end(),
                                        [](const ServerReply& r) { return r.status.ok(); });
  if (flags.json) {
    *env.out << ShardsJson(*results).dump(2) << "\n";
    return all_failed ? kExitFailure : kExitOk;
  }
  if (results->empty()) {
    *env.out << "no servers registered at " << env.coordinator << "\n";
    return kExitOk;
  }
  *env.out << ShardsTable(*results, flags.job_id, absl::Now());
  return all_failed ? kExitFailure : kExitOk;
}

int TopCommand(const CommandEnv& env, const TopFlags& flags) {
  if (flags.limit < 1) {
    return ReportError(env, absl::InvalidArgumentError(
                                absl::StrCat("--limit must be at least 1, got ", flags.limit)));
  }
  auto frame = [&]() -> absl::StatusOr<std::string> {
    CoordinatorClient client = MakeCoordinatorClient(env);
    ASSIGN_OR_RETURN(std::vector<JobStatus> jobs, client.ListJobs());
    if (!flags.job_id.empty()) {
      jobs.erase(std::remove_if(jobs.begin(), jobs.end(),
                                [&](const JobStatus& j) { return j.job_id() != flags.job_id; }),
                 jobs.end());
    }
    ASSIGN_OR_RETURN(std::vector<ServerReply> servers, AskServers(env, flags.job_id));
    return TopView(servers, jobs, flags.limit, absl::Now());
  };
  if (flags.once) {
    absl::StatusOr<std::string> text = frame();
    if (!text.ok()) return ReportError(env, text.status());
    *env.out << *text;
    return kExitOk;
  }
  return Refresh(env, "psctl top", flags.interval, flags.count, /*append=*/false, frame);
}

// The commands' flags, bound to CLI11.

namespace {

// --interval of the refreshing views, in seconds.
void AddIntervalFlag(CLI::App* command, double* interval_s) {
  command->add_option("--interval", *interval_s, "Seconds between refreshes (default 2)")
      ->check(CLI::PositiveNumber)
      ->type_name("SECONDS");
}

}  // namespace

CommandHandler BindShards(CLI::App* command) {
  struct Flags {
    ShardsFlags shards;
    double interval_s = 2;
  };
  auto flags = std::make_shared<Flags>();
  command->add_option("--job", flags->shards.job_id, "Only this job's shards")->type_name("ID");
  command->add_flag("--json", flags->shards.json,
                    "Print {\"servers\": [ServerStatus...], \"errors\": [...]} as JSON (with "
                    "--watch: one compact document per line and refresh)");
  command->add_flag("--watch", flags->shards.watch,
                    "Refresh every --interval seconds until Ctrl-C (redrawn in place on a "
                    "terminal)");
  AddIntervalFlag(command, &flags->interval_s);
  command
      ->add_option("--count", flags->shards.count,
                   "With --watch: stop after this many refreshes (default 0: until Ctrl-C)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("N");
  return [flags](const CommandEnv& env) {
    ShardsFlags shards = flags->shards;
    shards.interval = absl::Seconds(flags->interval_s);
    return ShardsCommand(env, shards);
  };
}

CommandHandler BindTop(CLI::App* command) {
  struct Flags {
    TopFlags top;
    double interval_s = 2;
  };
  auto flags = std::make_shared<Flags>();
  command->add_option("--job", flags->top.job_id, "Only this job")->type_name("ID");
  command->add_flag("--once", flags->top.once, "Print the view once and exit");
  AddIntervalFlag(command, &flags->interval_s);
  command
      ->add_option("--count", flags->top.count,
                   "Stop after this many refreshes (default 0: until Ctrl-C)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("N");
  command->add_option("--limit", flags->top.limit, "Rows per table (default 10)")
      ->check(CLI::PositiveNumber)
      ->type_name("N");
  return [flags](const CommandEnv& env) {
    TopFlags top = flags->top;
    top.interval = absl::Seconds(flags->interval_s);
    return TopCommand(env, top);
  };
}

CommandHandler BindCluster(CLI::App* command) {
  auto json = std::make_shared<bool>(false);
  command->add_flag("--json", *json, "Print the nodes as JSON");
  return [json](const CommandEnv& env) { return ClusterCommand(env, *json); };
}

}  // namespace psrv
