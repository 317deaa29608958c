// A thread asking for a small stack in a process with a large static TLS still gets that stack.
#include <pthread.h>

#include <gtest/gtest.h>

#include <cstring>

// 256 KiB of static TLS (external, so that it is kept): without thread_stack.cc, glibc takes it out
// of a thread's stack and a 64 KiB stack cannot even be created.
thread_local char tls_block[256 * 1024];

namespace {

void* UseStack(void* arg) {
  volatile char buffer[48 * 1024];
  std::memset(const_cast<char*>(buffer), 1, sizeof(buffer));
  tls_block[sizeof(tls_block) - 1] = buffer[100];
  if (tls_block[sizeof(tls_block) - 1] != 1) return nullptr;
  pthread_attr_t attr;
  size_t size = 0;
  pthread_getattr_np(pthread_self(), &attr);
  pthread_attr_getstacksize(&attr, &size);
  pthread_attr_destroy(&attr);
  *static_cast<size_t*>(arg) = size;
  return nullptr;
}

TEST(ThreadStackTest, RequestedStackIsUsableDespiteStaticTls) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 64 * 1024), 0);
  size_t size = 0;
  pthread_t thread;
  ASSERT_EQ(pthread_create(&thread, &attr, &UseStack, &size), 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
  EXPECT_GE(size, 64 * 1024 + sizeof(tls_block));
}

}  // namespace
