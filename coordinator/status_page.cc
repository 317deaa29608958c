// The status page and /api/status.
#include "coordinator/status_page.h"

#include <algorithm>
#include <future>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/format.h"
#include "common/job_spec.h"
#include "coordinator/svg_chart.h"
#include "google/protobuf/util/json_util.h"

namespace psrv {
namespace {

constexpr char kStyle[] = R"css(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
  background:#f4f6f8;color:#1d2430;font-size:14px}
header{background:#1d2430;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px;font-weight:600}
header .meta{color:#b8c2cf;font-size:12px;margin-top:4px}
header a{color:#9cc4ff}
main{padding:16px 24px}
h2{font-size:16px;margin:22px 0 8px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border-radius:8px;padding:10px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08);
  min-width:150px}
.card .label{color:#687385;font-size:12px}
.card .value{font-size:22px;font-weight:600;margin-top:2px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);
  border-radius:8px;overflow:hidden;font-size:13px}
th{background:#eef1f5;text-align:left;font-weight:600;color:#3b4656;padding:6px 8px;
  white-space:nowrap}
td{padding:4px 8px;border-top:1px solid #edf0f3;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.msg{white-space:normal;max-width:640px;color:#8a1c1c}
tr.error td{border-top:none;padding-top:0;font-size:12px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.HEALTHY,.SUCCEEDED{background:#dff5e3;color:#1b6b2f}
.SUSPECT,.PENDING{background:#fff1cc;color:#7a5600}
.DEAD,.FAILED{background:#fde0e0;color:#8a1c1c}
.RUNNING{background:#dbeafe;color:#1e4fa3}
.CANCELLED{background:#e8e8e8;color:#555}
.bar{display:inline-block;width:80px;height:6px;background:#e3e7ec;border-radius:3px;
  vertical-align:middle;margin-left:6px}
.bar span{display:block;height:6px;background:#3b82f6;border-radius:3px}
.jobcharts{background:#fff;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08);
  padding:10px 14px;margin-bottom:12px}
.jobcharts h3{margin:2px 0 6px;font-size:14px}
.charts{display:flex;gap:10px;flex-wrap:wrap}
.muted{color:#8a94a3}
.waiting{color:#7a5600;font-weight:600}
)css";

std::string Badge(const std::string& text) {
  return absl::StrCat("<span class=\"badge ", HtmlEscape(text), "\">", HtmlEscape(text),
                      "</span>");
}

std::string Cell(const std::string& html, bool numeric = false) {
  return absl::StrCat(numeric ? "<td class=\"num\">" : "<td>", html, "</td>");
}

std::string Header(const std::vector<std::pair<std::string, bool>>& columns) {
  std::string row = "<tr>";
  for (const auto& [name, numeric] : columns) {
    absl::StrAppend(&row, numeric ? "<th class=\"num\">" : "<th>", HtmlEscape(name), "</th>");
  }
  return row + "</tr>";
}

std::string RangeText(const KeyRange& range) {
  return absl::StrCat("[", range.begin(), ",", range.end(), ")");
}

std::string RateText(double per_second) {
  return per_second > 0 ? HumanCount(per_second) : "<span class=\"muted\">0</span>";
}

// The jobs to chart: running ones, then the latest ended ones, newest first, at most `max`.
std::vector<const JobStatus*> ChartedJobs(const std::vector<JobStatus>& jobs, int max) {
  std::vector<const JobStatus*> charted;
  for (int pass = 0; pass < 2; ++pass) {
    for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {
      const bool running = it->state() == RUNNING;
      if ((pass == 0) != running || it->state() == PENDING) continue;
      if (static_cast<int>(charted.size()) < max) charted.push_back(&*it);
    }
  }
  return charted;
}

std::string JobCharts(const JobStatus& job) {
  ChartSeries train{"train", "#2563eb", {}, false};
  ChartSeries throughput{"tokens/s", "#059669", {}, false};
  for (const LossPoint& p : job.loss_history()) {
    train.points.emplace_back(static_cast<double>(p.step()), p.loss());
    if (p.tokens_per_sec() > 0) {
      throughput.points.emplace_back(static_cast<double>(p.step()), p.tokens_per_sec());
    }
  }
  ChartSeries val{"validation", "#dc2626", {}, true};
  for (const ValidationPoint& p : job.val_history()) {
    val.points.emplace_back(static_cast<double>(p.step()), p.loss());
  }
  ChartOptions loss_options;
  loss_options.title = "Loss (nats/token)";
  loss_options.x_label = "step";
  loss_options.y_label = "loss";
  ChartOptions throughput_options;
  throughput_options.title = "Throughput (tokens/s, all workers)";
  throughput_options.x_label = "step";
  throughput_options.y_label = "tokens/s";
  throughput_options.y_from_zero = true;
  std::vector<ChartSeries> loss_series = {train};
  if (!val.points.empty()) loss_series.push_back(val);
  return absl::StrCat(
      "<div class=\"jobcharts\" id=\"charts-", HtmlEscape(job.job_id()), "\"><h3>",
      HtmlEscape(job.job_id()), " · ", HtmlEscape(job.spec().name()), " ",
      Badge(JobState_Name(job.state())), "</h3><div class=\"charts\">",
      SvgLineChart(loss_series, loss_options), SvgLineChart({throughput}, throughput_options),
      "</div></div>");
}

std::string JobsTable(const std::vector<JobStatus>& jobs, absl::Time now) {
  if (jobs.empty()) return "<p class=\"muted\">No jobs yet.</p>";
  std::string html = absl::StrCat(
      "<table id=\"jobs\">",
      Header({{"Job", false}, {"Name", false}, {"State", false}, {"Step", true},
              {"Loss", true}, {"Val loss", true}, {"Tokens/s", true}, {"Servers", true},
              {"Workers", true}, {"Elapsed", true}, {"Submitted", true}, {"Message", false}}));
  for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {
    const JobStatus& job = *it;
    const uint64_t steps = job.spec().training().steps();
    const double fraction =
        steps > 0 ? std::min(1.0, static_cast<double>(job.step()) / steps) : 0.0;
    absl::StrAppend(
        &html, "<tr>", Cell(absl::StrCat("<b>", HtmlEscape(job.job_id()), "</b>")),
        Cell(HtmlEscape(job.spec().name())), Cell(Badge(JobState_Name(job.state()))),
        Cell(absl::StrCat(job.step(), "/", steps, "<span class=\"bar\"><span style=\"width:",
                          static_cast<int>(fraction * 100), "%\"></span></span>"),
             true),
        Cell(FormatLoss(job.loss(), job.loss_history_size() > 0), true),
        Cell(FormatLoss(job.val_loss(), job.val_loss() > 0), true),
        Cell(job.tokens_per_sec() > 0 ? HumanCount(job.tokens_per_sec()) : "-", true),
        Cell(absl::StrCat(job.spec().num_servers()), true),
        // Pipeline jobs: groups x stages (a rank r is stage r % P of group r / P).
        Cell(PipelineStages(job.spec()) > 1
                 ? absl::StrCat(job.spec().num_workers(), " (", DataGroups(job.spec()),
                                " groups &times; ", PipelineStages(job.spec()), " stages)")
                 : absl::StrCat(job.spec().num_workers()),
             true));
    std::string elapsed = "-";
    if (job.start_time_ms() != 0) {
      const absl::Time end =
          job.end_time_ms() != 0 ? absl::FromUnixMillis(job.end_time_ms()) : now;
      elapsed = FormatClock(end - absl::FromUnixMillis(job.start_time_ms()));
    }
    absl::StrAppend(&html, Cell(elapsed, true),
                    Cell(FormatAgeSince(job.submit_time_ms(), now) + " ago", true),
                    "<td class=\"msg\">", HtmlEscape(job.message()), "</td></tr>");
  }
  return html + "</table>";
}

std::string ShardsTable(const std::vector<ServerReport>& servers, absl::Time now) {
  if (servers.empty()) return "<p class=\"muted\">No servers registered.</p>";
  std::string html = absl::StrCat(
      "<div class=\"scroll\"><table id=\"shards\">",
      Header({{"Server", false}, {"Job", false}, {"Table", false}, {"Range", false},
              {"Memory", true}, {"Version", true}, {"Mode", false}, {"Push/s", true},
              {"Pull/s", true}, {"Pushes / pulls", true}, {"In / out", true},
              {"Updated", true}, {"Waiting for / clocks", false}}));
  for (const ServerReport& report : servers) {
    const std::string server = HtmlEscape(report.node.address().empty() ? report.node.node_id()
                                                                         : report.node.address());
    if (!report.status.ok()) {
      absl::StrAppend(&html, "<tr>", Cell(server), "<td class=\"msg\" colspan=\"12\">",
                      HtmlEscape(std::string(report.status.status().message())), "</td></tr>");
      continue;
    }
    if (report.status->shards_size() == 0) {
      absl::StrAppend(&html, "<tr>", Cell(server),
                      "<td class=\"muted\" colspan=\"12\">no shards</td></tr>");
      continue;
    }
    for (const ShardStatus& shard : report.status->shards()) {
      std::string waiting = "<span class=\"muted\">-</span>";
      const std::string staleness = StalenessText(
          {{shard.worker_clocks().begin(), shard.worker_clocks().end()}, shard.staleness(),
           shard.blocked_pulls(), shard.mean_push_staleness(), shard.max_push_staleness()});
      if (!staleness.empty()) {
        waiting = absl::StrCat("<span", shard.blocked_pulls() > 0 ? " class=\"waiting\"" : "", ">",
                               HtmlEscape(staleness), "</span>");
      } else if (shard.waiting_for_workers_size() > 0) {
        waiting = absl::StrCat("<span class=\"waiting\">rank ",
                               absl::StrJoin(shard.waiting_for_workers(), ","), " for ",
                               FormatAge(absl::Milliseconds(shard.waiting_ms())), "</span>");
      }
      if (shard.aggregate_first() > 0) {  // Backup workers: how many a step waits for.
        absl::StrAppend(&waiting, " <span class=\"muted\">first ", shard.aggregate_first(), ", ",
                        shard.late_pushes(), " late</span>");
      }
      // The last rejected push, on a row of its own under the shard.
      std::string error;
      if (!shard.last_error().empty()) {
        error = absl::StrCat("<tr class=\"error\"><td></td><td class=\"msg\" colspan=\"12\">"
                             "last rejected push ",
                             FormatAgeSince(shard.last_error_ms(), now), " ago: ",
                             HtmlEscape(shard.last_error()), "</td></tr>");
      }
      absl::StrAppend(
          &html, "<tr>", Cell(server), Cell(HtmlEscape(shard.job_id())),
          Cell(HtmlEscape(shard.table())), Cell(RangeText(shard.range())),
          Cell(HumanBytes(shard.bytes()), true), Cell(absl::StrCat(shard.version()), true),
          Cell(ConsistencyMode_Name(shard.consistency())), Cell(RateText(shard.push_rate()), true),
          Cell(RateText(shard.pull_rate()), true),
          Cell(absl::StrCat(shard.pushes(), " / ", shard.pulls()), true),
          Cell(absl::StrCat(HumanBytes(shard.bytes_in()), " / ", HumanBytes(shard.bytes_out())),
               true),
          Cell(FormatAgeSince(shard.last_update_ms(), now), true), Cell(waiting), "</tr>",
          error);
    }
  }
  return html + "</table></div>";
}

std::string NodesTable(const std::vector<NodeInfo>& nodes, absl::Time now) {
  if (nodes.empty()) return "<p class=\"muted\">No nodes registered.</p>";
  std::string html = absl::StrCat(
      "<table id=\"nodes\">",
      Header({{"Node", false}, {"Role", false}, {"Address", false}, {"Health", false},
              {"Heartbeat", true}, {"Job", false}, {"Rank", true}}));
  for (const NodeInfo& node : nodes) {
    const bool has_job = !node.job_id().empty();
    absl::StrAppend(&html, "<tr>", Cell(HtmlEscape(node.node_id())),
                    Cell(NodeRole_Name(node.role())), Cell(HtmlEscape(node.address())),
                    Cell(Badge(NodeHealth_Name(node.health()))),
                    Cell(FormatAgeSince(node.last_heartbeat_ms(), now) + " ago", true),
                    Cell(has_job ? HtmlEscape(node.job_id()) : "-"),
                    Cell(has_job && node.role() == WORKER ? absl::StrCat(node.rank()) : "-", true),
                    "</tr>");
  }
  return html + "</table>";
}

std::string SummaryCards(const ClusterSnapshot& snapshot) {
  int servers = 0, healthy_servers = 0, workers = 0, healthy_workers = 0;
  for (const NodeInfo& node : snapshot.nodes) {
    int* total = node.role() == SERVER ? &servers : &workers;
    int* healthy = node.role() == SERVER ? &healthy_servers : &healthy_workers;
    ++*total;
    if (node.health() == HEALTHY) ++*healthy;
  }
  int running = 0;
  double tokens = 0;
  for (const JobStatus& job : snapshot.jobs) {
    if (job.state() == RUNNING) {
      ++running;
      tokens += job.tokens_per_sec();
    }
  }
  int shards = 0;
  uint64_t bytes = 0;
  for (const ServerReport& report : snapshot.servers) {
    if (!report.status.ok()) continue;
    shards += report.status->shards_size();
    for (const ShardStatus& shard : report.status->shards()) bytes += shard.bytes();
  }
  auto card = [](const std::string& label, const std::string& value) {
    return absl::StrCat("<div class=\"card\"><div class=\"label\">", HtmlEscape(label),
                        "</div><div class=\"value\">", value, "</div></div>");
  };
  return absl::StrCat(
      "<div class=\"cards\">",
      card("Servers healthy", absl::StrCat(healthy_servers, " / ", servers)),
      card("Workers healthy", absl::StrCat(healthy_workers, " / ", workers)),
      card("Jobs running", absl::StrCat(running, " <span class=\"muted\" style=\"font-size:13px\">of ",
                                         snapshot.jobs.size(), "</span>")),
      card("Tokens/s (running)", tokens > 0 ? HumanCount(tokens) : "-"),
      card("Shards", absl::StrCat(shards, " <span class=\"muted\" style=\"font-size:13px\">",
                                  HumanBytes(bytes), "</span>")),
      "</div>");
}

std::string ProtoJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) return "null";
  return json;
}

}  // namespace

ClusterSnapshot TakeSnapshot(ClusterCoordinator* cluster, const std::string& coordinator,
                             const ServerStatusFetcher& fetch) {
  ClusterSnapshot snapshot;
  snapshot.time = absl::Now();
  snapshot.coordinator = coordinator;
  const ListNodesResponse nodes = cluster->ListNodes();
  snapshot.nodes.assign(nodes.nodes().begin(), nodes.nodes().end());
  const ListJobsResponse jobs = cluster->ListJobs();
  snapshot.jobs.assign(jobs.jobs().begin(), jobs.jobs().end());
  std::vector<std::future<absl::StatusOr<ServerStatus>>> replies;
  for (const NodeInfo& node : snapshot.nodes) {
    if (node.role() != SERVER) continue;
    if (node.health() == DEAD) {
      std::promise<absl::StatusOr<ServerStatus>> dead;
      dead.set_value(absl::UnavailableError("not asked: the server stopped sending heartbeats"));
      replies.push_back(dead.get_future());
    } else {
      replies.push_back(std::async(std::launch::async,
                                   [&fetch, address = node.address()] { return fetch(address); }));
    }
    snapshot.servers.push_back(ServerReport{node, absl::UnknownError("")});
  }
  for (size_t i = 0; i < replies.size(); ++i) snapshot.servers[i].status = replies[i].get();
  return snapshot;
}

std::string RenderStatusPage(const ClusterSnapshot& snapshot, const StatusPageOptions& options) {
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">";
  if (options.refresh_seconds > 0) {
    absl::StrAppend(&html, "<meta http-equiv=\"refresh\" content=\"", options.refresh_seconds,
                    "\">");
  }
  absl::StrAppend(
      &html, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
      "<title>psrv cluster status</title><style>", kStyle, "</style></head><body>",
      "<header><h1>psrv cluster</h1><div class=\"meta\">coordinator ",
      HtmlEscape(snapshot.coordinator), " · ",
      absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", snapshot.time, absl::UTCTimeZone()));
  if (options.refresh_seconds > 0) {
    absl::StrAppend(&html, " · refreshes every ", options.refresh_seconds,
                    " s (<a href=\"/?refresh=0\">stop</a>)");
  }
  absl::StrAppend(&html,
                  " · <a href=\"/api/status\">JSON</a> · <a href=\"/metrics\">metrics</a>"
                  "</div></header><main>",
                  SummaryCards(snapshot), "<h2>Jobs</h2>", JobsTable(snapshot.jobs, snapshot.time));
  const std::vector<const JobStatus*> charted =
      ChartedJobs(snapshot.jobs, options.max_charted_jobs);
  if (!charted.empty()) {
    html += "<h2>Training curves</h2>";
    for (const JobStatus* job : charted) html += JobCharts(*job);
  }
  absl::StrAppend(&html, "<h2>Shards</h2>", ShardsTable(snapshot.servers, snapshot.time),
                  "<h2>Nodes</h2>", NodesTable(snapshot.nodes, snapshot.time),
                  "</main></body></html>\n");
  return html;
}

std::string RenderStatusJson(const ClusterSnapshot& snapshot) {
  nlohmann::ordered_json out;
  out["time_ms"] = absl::ToUnixMillis(snapshot.time);
  out["coordinator"] = snapshot.coordinator;
  out["nodes"] = nlohmann::ordered_json::array();
  for (const NodeInfo& node : snapshot.nodes) {
    out["nodes"].push_back(nlohmann::ordered_json::parse(ProtoJson(node)));
  }
  out["jobs"] = nlohmann::ordered_json::array();
  for (const JobStatus& job : snapshot.jobs) {
    out["jobs"].push_back(nlohmann::ordered_json::parse(ProtoJson(job)));
  }
  out["servers"] = nlohmann::ordered_json::array();
  out["errors"] = nlohmann::ordered_json::array();
  for (const ServerReport& report : snapshot.servers) {
    if (report.status.ok()) {
      out["servers"].push_back(nlohmann::ordered_json::parse(ProtoJson(*report.status)));
    } else {
      out["errors"].push_back(
          {{"node_id", report.node.node_id()},
           {"address", report.node.address()},
           {"code", absl::StatusCodeToString(report.status.status().code())},
           {"error", std::string(report.status.status().message())}});
    }
  }
  return out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace psrv
