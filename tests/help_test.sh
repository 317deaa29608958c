#!/usr/bin/env bash
# Each daemon's --help lists its own flags with their descriptions (Abseil's default shows none
# for binaries whose flags live in <role>_main.cc: common/flags_help.h).
set -uo pipefail
check() {
  local binary=$1
  shift
  local out
  out=$("$binary" --help 2>&1)
  for flag in "$@"; do
    if ! grep -q -- "--$flag (" <<<"$out"; then
      echo "FAIL: $binary --help does not describe --$flag:"
      echo "$out"
      exit 1
    fi
  done
  if grep -q "No flags matched" <<<"$out"; then
    echo "FAIL: $binary --help says no flags matched"
    exit 1
  fi
}
check coordinator/ps_coordinator port state_db metrics_port tls_cert tls_key tls_ca token_file auth_tokens_file allow_insecure_tokens http_token_file
check server/ps_server coordinator port metrics_port tls_cert tls_key tls_ca token_file auth_tokens_file allow_insecure_tokens http_token_file max_memory_bytes checkpoint_root ended_job_ttl
check worker/ps_worker coordinator device cuda_attention cuda_recompute_gelu cuda_gelu_epilogue cuda_graph max_jobs tls_cert tls_key tls_ca token_file auth_tokens_file allow_insecure_tokens http_token_file final_report_patience slowdown
echo PASS
