// The glue between the coordinator's state (cluster_state.h) and its SQLite file (state_store.h):
// jobs and nodes as JobRecord and NodeRecord, and back.
#ifndef PSRV_COORDINATOR_STATE_RECORDS_H_
#define PSRV_COORDINATOR_STATE_RECORDS_H_

#include "absl/status/status.h"
#include "coordinator/cluster_state.h"
#include "coordinator/state_store.h"

namespace psrv {

// The jobs and nodes of `state.unsaved_jobs` and `state.unsaved_nodes` (a node no longer in
// `state.nodes`: its deletion), and the id counters, as one batch.
StateStore::Batch UnsavedRecords(const ClusterState& state);

// Fills an empty `state` with `contents` (ClusterCoordinator::Load). DATA_LOSS: a job record that
// does not add up.
absl::Status RestoreState(StateStore::Contents contents, ClusterState* state);

}  // namespace psrv

#endif  // PSRV_COORDINATOR_STATE_RECORDS_H_
