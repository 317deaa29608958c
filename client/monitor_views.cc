#include "client/monitor_views.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/format.h"

namespace psrv {
namespace {

std::string ServerName(const NodeInfo& node) {
  return node.address().empty() ? node.node_id() : node.address();
}

std::string RangeText(const KeyRange& range) {
  return absl::StrCat("[", range.begin(), ",", range.end(), ")");
}

std::string Rate(double per_second) { return per_second > 0 ? HumanCount(per_second) : "0"; }

std::string ByteRate(double per_second) {
  return per_second > 0 ? absl::StrCat(HumanBytes(static_cast<uint64_t>(per_second)), "/s") : "0";
}

// "1,3 for 2.5s" (SYNC), the clocks and staleness (SSP, ASYNC), or "-".
std::string Waiting(const ShardStatus& shard) {
  const std::string staleness = StalenessText(
      {{shard.worker_clocks().begin(), shard.worker_clocks().end()}, shard.staleness(),
       shard.blocked_pulls(), shard.mean_push_staleness(), shard.max_push_staleness()});
  if (!staleness.empty()) return staleness;
  std::string text;
  if (shard.waiting_for_workers_size() > 0) {
    text = absl::StrCat(absl::StrJoin(shard.waiting_for_workers(), ","), " for ",
                        FormatAge(absl::Milliseconds(shard.waiting_ms())));
  }
  if (shard.aggregate_first() > 0) {  // Backup workers.
    absl::StrAppend(&text, text.empty() ? "" : "; ", "first ", shard.aggregate_first(), ", ",
                    shard.late_pushes(), " late");
  }
  return text.empty() ? "-" : text;
}

std::string OneLine(absl::string_view text) {
  return absl::StrReplaceAll(text, {{"\n  ", "; "}, {"\n", " "}});
}

}  // namespace

std::string ShardsTable(const std::vector<ServerReply>& servers, const std::string& job_id,
                        absl::Time now) {
  Table table({"SERVER", "JOB", "TABLE", "RANGE", "ELEMENTS", "BYTES", "VERSION", "MODE", "ROLE",
               "PUSHES", "PULLS", "PUSH/S", "PULL/S", "IN/OUT", "UPDATED", "WORKERS", "WAITING"});
  for (int c : {4, 5, 6, 9, 10, 11, 12, 13, 14}) table.SetRightAligned(c);
  for (const ServerReply& reply : servers) {
    const std::string server = ServerName(reply.node);
    if (!reply.status.ok()) {
      table.AddSpanningRow(server, absl::StrCat("error: ", OneLine(reply.status.status().message())));
      continue;
    }
    if (reply.status->shards_size() == 0) {
      table.AddSpanningRow(
          server, job_id.empty() ? "(no shards)" : absl::StrCat("(no shards of job ", job_id, ")"));
      continue;
    }
    std::vector<ShardStatus> shards(reply.status->shards().begin(), reply.status->shards().end());
    std::sort(shards.begin(), shards.end(), [](const ShardStatus& a, const ShardStatus& b) {
      return std::make_tuple(a.job_id(), a.table(), a.range().begin()) <
             std::make_tuple(b.job_id(), b.table(), b.range().begin());
    });
    for (const ShardStatus& shard : shards) {
      std::vector<uint32_t> ranks(shard.workers_seen().begin(), shard.workers_seen().end());
      std::sort(ranks.begin(), ranks.end());
      table.AddRow({server, shard.job_id(), shard.table(), RangeText(shard.range()),
                    absl::StrCat(shard.elements()), HumanBytes(shard.bytes()),
                    absl::StrCat(shard.version()), ConsistencyMode_Name(shard.consistency()),
                    absl::AsciiStrToLower(ShardRole_Name(shard.role())),
                    absl::StrCat(shard.pushes()), absl::StrCat(shard.pulls()),
                    Rate(shard.push_rate()), Rate(shard.pull_rate()),
                    absl::StrCat(HumanBytes(shard.bytes_in()), " / ", HumanBytes(shard.bytes_out())),
                    FormatAgeSince(shard.last_update_ms(), now),
                    ranks.empty() ? "-" : absl::StrJoin(ranks, ","), Waiting(shard)});
      if (!shard.last_error().empty()) {
        table.AddSpanningRow("", absl::StrCat("  last rejected push ",
                                              FormatAgeSince(shard.last_error_ms(), now),
                                              " ago: ", OneLine(shard.last_error())));
      }
      if (shard.backup_lost()) {
        table.AddSpanningRow("", absl::StrCat("  unreplicated: backup lost ",
                                              FormatAgeSince(shard.backup_error_ms(), now),
                                              " ago: ", OneLine(shard.backup_error())));
      }
    }
  }
  return table.Render();
}

std::string TopView(const std::vector<ServerReply>& servers, const std::vector<JobStatus>& jobs,
                    int limit, absl::Time now) {
  // Busiest shards.
  struct Busy {
    std::string server;
    const ShardStatus* shard;
  };
  std::vector<Busy> busy;
  std::vector<std::string> errors;
  // (job, rank) -> shards whose step waits for it.
  std::map<std::pair<std::string, uint32_t>, int> waited_on;
  for (const ServerReply& reply : servers) {
    if (!reply.status.ok()) {
      errors.push_back(absl::StrCat(ServerName(reply.node), ": ",
                                    OneLine(reply.status.status().message())));
      continue;
    }
    for (const ShardStatus& shard : reply.status->shards()) {
      busy.push_back({ServerName(reply.node), &shard});
      for (uint32_t rank : shard.waiting_for_workers()) ++waited_on[{shard.job_id(), rank}];
    }
  }
  std::stable_sort(busy.begin(), busy.end(), [](const Busy& a, const Busy& b) {
    return a.shard->push_rate() + a.shard->pull_rate() > b.shard->push_rate() + b.shard->pull_rate();
  });
  std::string out = "BUSIEST SHARDS (pushes + pulls per second over the last ~10 s)\n";
  if (busy.empty()) {
    out += errors.empty() ? "  (no shards)\n" : "";
  } else {
    Table table({"SERVER", "JOB", "TABLE", "RANGE", "PUSH/S", "PULL/S", "IN/S", "OUT/S",
                 "VERSION", "UPDATED", "WAITING"});
    for (int c : {4, 5, 6, 7, 8, 9}) table.SetRightAligned(c);
    for (size_t i = 0; i < busy.size() && static_cast<int>(i) < limit; ++i) {
      const ShardStatus& s = *busy[i].shard;
      table.AddRow({busy[i].server, s.job_id(), s.table(), RangeText(s.range()),
                    Rate(s.push_rate()), Rate(s.pull_rate()), ByteRate(s.bytes_in_rate()),
                    ByteRate(s.bytes_out_rate()), absl::StrCat(s.version()),
                    FormatAgeSince(s.last_update_ms(), now), Waiting(s)});
    }
    out += table.Render();
  }
  for (const std::string& error : errors) absl::StrAppend(&out, "  error: ", error, "\n");

  // Slowest workers of the running jobs.
  out += "\nSLOWEST WORKERS (running jobs, lowest tokens/s first)\n";
  struct Slow {
    const JobStatus* job;
    const WorkerProgress* worker;
    uint64_t behind;
  };
  std::vector<Slow> slow;
  for (const JobStatus& job : jobs) {
    if (job.state() != RUNNING) continue;
    uint64_t fastest = 0;
    for (const WorkerProgress& w : job.workers()) fastest = std::max<uint64_t>(fastest, w.step());
    for (const WorkerProgress& w : job.workers()) {
      if (!w.done()) slow.push_back({&job, &w, fastest - w.step()});
    }
  }
  if (slow.empty()) {
    out += "  (no running jobs)\n";
    return out;
  }
  // Workers that have not reported yet (0 tokens/s) go last: nothing is known about them.
  std::stable_sort(slow.begin(), slow.end(), [](const Slow& a, const Slow& b) {
    const bool a_known = a.worker->tokens_per_sec() > 0, b_known = b.worker->tokens_per_sec() > 0;
    if (a_known != b_known) return a_known;
    if (a.worker->tokens_per_sec() != b.worker->tokens_per_sec()) {
      return a.worker->tokens_per_sec() < b.worker->tokens_per_sec();
    }
    return a.worker->step_seconds() > b.worker->step_seconds();
  });
  Table table({"JOB", "RANK", "WORKER", "STEP", "BEHIND", "TOK/S", "STEP TIME", "LOSS",
               "SHARDS WAITING"});
  for (int c : {1, 3, 4, 5, 6, 7, 8}) table.SetRightAligned(c);
  for (size_t i = 0; i < slow.size() && static_cast<int>(i) < limit; ++i) {
    const WorkerProgress& w = *slow[i].worker;
    auto waiting = waited_on.find({slow[i].job->job_id(), w.rank()});
    table.AddRow(
        {slow[i].job->job_id(), absl::StrCat(w.rank()), w.worker_id().empty() ? "-" : w.worker_id(),
         absl::StrCat(w.step()), absl::StrCat(slow[i].behind),
         w.tokens_per_sec() > 0 ? HumanCount(w.tokens_per_sec()) : "-",
         w.step_seconds() > 0 ? absl::StrCat(HumanCount(w.step_seconds() * 1000), " ms") : "-",
         FormatLoss(w.loss(), w.step() > 0),
         waiting == waited_on.end() ? "0" : absl::StrCat(waiting->second)});
  }
  out += table.Render();
  return out;
}

}  // namespace psrv
