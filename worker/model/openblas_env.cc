#include "worker/model/openblas_env.h"

#include <stdlib.h>
#include <unistd.h>

#include <string>

namespace psrv {

void ConfigureOpenBlas(char** argv) {
  std::string set;
  if (getenv("OPENBLAS_CORETYPE") == nullptr) {
    __builtin_cpu_init();
    const char* core = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                       : __builtin_cpu_supports("avx2")  ? "Haswell"
                                                         : nullptr;
    if (core != nullptr) {
      setenv("OPENBLAS_CORETYPE", core, 1);
      set += "OPENBLAS_CORETYPE ";
    }
  }
  if (getenv("OPENBLAS_NUM_THREADS") == nullptr) {
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    set += "OPENBLAS_NUM_THREADS";
  }
  if (set.empty()) return;
  setenv("PSRV_OPENBLAS_SET", set.c_str(), 1);
  execv("/proc/self/exe", argv);  // Returns only on failure: carry on with the defaults.
}

}  // namespace psrv
