// Makes a thread stack size asked of pthread_attr_setstacksize the stack a thread can use.
//
// glibc carves the static TLS of every loaded library out of an explicitly sized thread stack.
// civetweb (common/http_server.cc) starts its threads with a compiled-in 100 KiB stack; the worker
// links OpenBLAS (60 KiB of TLS) and glog (30 KiB), which left civetweb's threads about 8 KiB, and
// they crashed in snprintf. This definition interposes on glibc's and adds the static TLS size to
// the requested one, so every such thread gets the stack it asked for (never less than before).
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>

#include <cstddef>

namespace {

int AddTlsSize(dl_phdr_info* info, size_t, void* total) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& header = info->dlpi_phdr[i];
    if (header.p_type == PT_TLS) {
      const size_t align = header.p_align > 0 ? header.p_align : 1;
      *static_cast<size_t*>(total) += (header.p_memsz + align - 1) / align * align;
    }
  }
  return 0;
}

size_t StaticTlsSize() {
  size_t total = 0;
  dl_iterate_phdr(&AddTlsSize, &total);
  return total;
}

}  // namespace

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stack_size) {
  using Function = int (*)(pthread_attr_t*, size_t);
  static const Function glibc =
      reinterpret_cast<Function>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  static const size_t tls = StaticTlsSize();
  if (glibc == nullptr) return 0;  // Cannot happen with glibc; the attribute keeps its default.
  return glibc(attr, stack_size + tls);
}
