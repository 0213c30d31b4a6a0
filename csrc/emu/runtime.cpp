// The SIMT emulator's scheduler: fibers for CUDA threads, OS threads for blocks (runtime.h).
//
// Fibers switch with a small hand-written x86-64 routine (callee-saved registers, MXCSR and
// the x87 control word; about 5 ns, against ~0.5 us for swapcontext, which makes a signal-
// mask system call each time); other targets use ucontext. Fibers rather than OS threads:
// the schedule (the order fibers resume in) is then fully ours, so race mode can replay a
// block in chosen orders and a failing order reproduces exactly.
#include "emu/runtime.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <numeric>
#include <set>
#include <sstream>
#include <thread>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define FL_EMU_ASAN 1
#else
#define FL_EMU_ASAN 0
#endif

namespace fl {
namespace emu {

void fiber_main(Fiber* f);

}  // namespace emu
}  // namespace fl

extern "C" __attribute__((visibility("hidden"))) void fl_emu_fiber_main(fl::emu::Fiber* f) {
  fl::emu::fiber_main(f);
}

#if defined(__x86_64__)
// fl_emu_switch(save, load): push the callee-saved state, store rsp in *save, load rsp from
// `load`, pop that fiber's state and return into it. A new fiber's stack is prepared so the
// first switch "returns" into fl_emu_entry with its Fiber* in r12.
extern "C" __attribute__((visibility("hidden"))) void fl_emu_switch(void** save, void* load);
asm(R"(
  .text
  .p2align 4
  .globl fl_emu_switch
  .hidden fl_emu_switch
  .type fl_emu_switch,@function
fl_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fl_emu_switch, .-fl_emu_switch

  .p2align 4
  .globl fl_emu_entry
  .hidden fl_emu_entry
  .type fl_emu_entry,@function
fl_emu_entry:
  movq %r12, %rdi
  call fl_emu_fiber_main
  ud2
  .size fl_emu_entry, .-fl_emu_entry
)");
extern "C" __attribute__((visibility("hidden"))) void fl_emu_entry();
#endif

namespace fl {
namespace emu {
namespace {

enum FiberState : int { kRunnable, kAtBarrier, kAtWarp, kAtGrid, kDone, kAborted };

// Thrown by fail(): unwinds the failing thread's frames (freeing what they own) to
// fiber_main, which then leaves the launch.
struct FiberAbort {};

struct Launch;

struct Pending {  // a warp collective some lanes have reached
  const char* what;
  uint32_t mask, arrived;
  const void* in[32];
  void* out[32];
};

struct Warp {
  uint32_t exists = 0, exited = 0;
  std::vector<Pending> pending;
};

}  // namespace

struct Block {
  Dim3 idx;
  int64_t linear = 0;
  Launch* launch = nullptr;
  std::vector<Fiber*> fibers;
  std::vector<Warp> warps;
  int alive = 0;
  int bar_arrived[16] = {};
  int bar_count[16] = {};
  uint64_t phase = 0;
  void* sched_sp = nullptr;  // the worker's stack pointer while a fiber runs
#if !defined(__x86_64__)
  ucontext_t sched_ctx;
#endif
  unsigned char* dyn_smem = nullptr;
  size_t dyn_bytes = 0;
  // AddressSanitizer's view of the worker's own stack, learnt at the first switch.
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
  void* sched_fake = nullptr;
};

namespace {

// ---------------------------------------------------------------------------------------
// Global state: configuration, log, errors.

std::mutex g_mu;
Config g_config;
std::vector<LaunchRecord> g_log;
std::set<std::string> g_kernels_run;
int g_error_code = 0;
std::string g_error;
int64_t g_launch_index = 0;
std::map<const void*, int> g_max_dyn_smem;

void set_error(int code, const std::string& message) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_error_code == 0) {
    g_error_code = code;
    g_error = message;
  }
}

// Cooperative grid barrier across the blocks' OS threads; a finished block drops out.
struct GridBarrier {
  std::mutex mu;
  std::condition_variable cv;
  int64_t expected = 0, arrived = 0, generation = 0;
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mu);
    const int64_t gen = generation;
    if (++arrived == expected) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != gen; });
    }
  }
  void drop() {
    std::lock_guard<std::mutex> lock(mu);
    if (--expected > 0 && arrived == expected) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    }
  }
};

struct Launch {
  std::string name;
  Dim3 grid, block;
  size_t smem;
  bool cooperative;
  KernelThunk thunk;
  void* closure;
  Order order;
  uint64_t seed;
  std::atomic<bool> failed{false};
  std::atomic<bool> float_atomics{false};
  GridBarrier grid_barrier;
  int threads_per_block() const { return int(block.x * block.y * block.z); }
};

// ---------------------------------------------------------------------------------------
// Stacks: kStackBytes regions aligned to their size. [base, base + page): the Fiber;
// [base + page, base + 2 pages): a guard page; the rest: the stack, growing down.

std::mutex g_stack_mu;
std::vector<char*> g_free_stacks;

size_t page_bytes() {
  static const size_t p = size_t(sysconf(_SC_PAGESIZE));
  return p;
}

char* take_stack() {
  {
    std::lock_guard<std::mutex> lock(g_stack_mu);
    if (!g_free_stacks.empty()) {
      char* s = g_free_stacks.back();
      g_free_stacks.pop_back();
      return s;
    }
  }
  const size_t size = kStackBytes;
  void* raw = mmap(nullptr, 2 * size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    std::fprintf(stderr, "fl::emu: out of memory for fiber stacks\n");
    std::abort();
  }
  const uintptr_t r = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t base = (r + size - 1) & ~(size - 1);
  if (base > r) munmap(raw, base - r);
  if (base + size < r + 2 * size)
    munmap(reinterpret_cast<void*>(base + size), r + 2 * size - base - size);
  mprotect(reinterpret_cast<void*>(base + page_bytes()), page_bytes(), PROT_NONE);
  return reinterpret_cast<char*>(base);
}

void give_stack(char* s) {
  std::lock_guard<std::mutex> lock(g_stack_mu);
  g_free_stacks.push_back(s);
}

// ---------------------------------------------------------------------------------------
// Switching.

void prepare(Fiber* f) {
#if FL_EMU_ASAN
  // A fiber abandoned by a failed launch leaves its frames' redzones behind.
  __asan_unpoison_memory_region(f->stack_lo,
                                static_cast<char*>(f->stack_hi) - static_cast<char*>(f->stack_lo));
  f->asan_fake = nullptr;
#endif
#if defined(__x86_64__)
  // See fl_emu_switch: X = top - 16 is 16-aligned; below it the entry address, six
  // registers (r12 = f) and the MXCSR / x87 control words.
  uintptr_t x = (reinterpret_cast<uintptr_t>(f->stack_hi) - 16) & ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(x);
  *--sp = reinterpret_cast<uint64_t>(&fl_emu_entry);
  *--sp = 0;                              // rbp
  *--sp = 0;                              // rbx
  *--sp = reinterpret_cast<uint64_t>(f);  // r12
  *--sp = 0;                              // r13
  *--sp = 0;                              // r14
  *--sp = 0;                              // r15
  *--sp = 0x1F80ull | (0x037Full << 32);  // MXCSR default, x87 control word default
  f->sp = sp;
#else
  auto* ctx = static_cast<ucontext_t*>(f->ctx);
  getcontext(ctx);
  ctx->uc_stack.ss_sp = f->stack_lo;
  ctx->uc_stack.ss_size = static_cast<char*>(f->stack_hi) - static_cast<char*>(f->stack_lo);
  ctx->uc_link = nullptr;
  makecontext(ctx, reinterpret_cast<void (*)()>(&fl_emu_fiber_main), 1, f);
#endif
}

// Scheduler -> fiber.
void resume(Block& b, Fiber* f) {
#if FL_EMU_ASAN
  __sanitizer_start_switch_fiber(&b.sched_fake, f->stack_lo,
                                 static_cast<char*>(f->stack_hi) - static_cast<char*>(f->stack_lo));
#endif
#if defined(__x86_64__)
  fl_emu_switch(&b.sched_sp, f->sp);
#else
  swapcontext(&b.sched_ctx, static_cast<ucontext_t*>(f->ctx));
#endif
#if FL_EMU_ASAN
  __sanitizer_finish_switch_fiber(b.sched_fake, nullptr, nullptr);
#endif
}

// Fiber -> scheduler. The fiber resumes here when the scheduler picks it again (never, once
// it is done or aborted).
void yield_to_scheduler(Fiber& f) {
  Block& b = *f.block;
#if FL_EMU_ASAN
  const bool final = f.state == kDone || f.state == kAborted;
  __sanitizer_start_switch_fiber(final ? nullptr : &f.asan_fake, b.sched_bottom, b.sched_size);
#endif
#if defined(__x86_64__)
  fl_emu_switch(&f.sp, b.sched_sp);
#else
  swapcontext(static_cast<ucontext_t*>(f.ctx), &b.sched_ctx);
#endif
#if FL_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake, &b.sched_bottom, &b.sched_size);
#endif
}

std::string dim_str(const Dim3& d) {
  std::ostringstream s;
  s << "(" << d.x << ", " << d.y << ", " << d.z << ")";
  return s.str();
}

std::string lanes_str(uint32_t bits) {
  std::ostringstream s;
  s << "0x" << std::hex << bits;
  return s.str();
}

// ---------------------------------------------------------------------------------------
// Static shared memory = this module's TLS block; poisoned at each block start.

struct TlsInfo {
  uintptr_t fn;
  void* data;
  size_t bytes;
};

int find_tls(struct dl_phdr_info* info, size_t, void* arg) {
  auto* t = static_cast<TlsInfo*>(arg);
  bool mine = false;
  const ElfW(Phdr)* tls = nullptr;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr) & ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD) {
      const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
      if (t->fn >= lo && t->fn < lo + ph.p_memsz) mine = true;
    }
    if (ph.p_type == PT_TLS) tls = &ph;
  }
  if (!mine) return 0;
  if (tls) {
    t->data = info->dlpi_tls_data;
    t->bytes = tls->p_memsz;
  }
  return 1;
}

__attribute__((noinline)) void touch_tls() {
  static thread_local volatile char anchor;  // makes this thread's TLS block exist
  anchor = char(anchor + 1);
}

void poison_static_shared() {
  touch_tls();
  TlsInfo t{reinterpret_cast<uintptr_t>(&touch_tls), nullptr, 0};
  dl_iterate_phdr(find_tls, &t);
  if (t.data && t.bytes) std::memset(t.data, 0xFF, t.bytes);
}

// ---------------------------------------------------------------------------------------
// Block execution.

uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void make_order(const Block& b, std::vector<int>& order) {
  const int n = int(b.fibers.size());
  order.resize(n);
  std::iota(order.begin(), order.end(), 0);
  switch (b.launch->order) {
    case Order::kForward: break;
    case Order::kReverse: std::reverse(order.begin(), order.end()); break;
    case Order::kShuffle: {
      uint64_t s =
          splitmix(b.launch->seed ^ splitmix(uint64_t(b.linear) * 0x100000001B3ull ^ b.phase));
      for (int i = n - 1; i > 0; --i) {
        s = splitmix(s);
        std::swap(order[i], order[int(s % uint64_t(i + 1))]);
      }
      break;
    }
  }
}

std::string where(const Fiber& f) {
  return "block " + dim_str(f.block->idx) + ", thread " + dim_str(f.thread_idx);
}

void abort_launch(Launch& L, const std::string& message) {
  set_error(kErrorLaunchFailure, "kernel " + L.name + ": " + message);
  if (!L.failed.exchange(true))
    std::fprintf(stderr, "fl::emu: kernel %s: %s\n", L.name.c_str(), message.c_str());
}

// Release barriers that are complete. Returns whether any fiber became runnable.
bool release_barriers(Block& b) {
  bool any = false;
  for (int id = 0; id < 16; ++id) {
    if (b.bar_arrived[id] == 0) continue;
    const int need = b.bar_count[id] > 0 ? b.bar_count[id] : b.alive;
    if (b.bar_arrived[id] < need) continue;
    int released = 0;
    for (Fiber* f : b.fibers)
      if (f->state == kAtBarrier && f->bar_id == id && released < need) {
        f->state = kRunnable;
        ++released;
      }
    b.bar_arrived[id] = 0;
    b.bar_count[id] = 0;
    any = true;
  }
  return any;
}

std::string deadlock_report(const Block& b) {
  int at_bar = 0, at_warp = 0, at_grid = 0;
  std::ostringstream s;
  for (const Fiber* f : b.fibers) {
    at_bar += f->state == kAtBarrier;
    at_warp += f->state == kAtWarp;
    at_grid += f->state == kAtGrid;
  }
  s << "deadlock in block " << dim_str(b.idx) << ": " << at_bar << " threads wait at a barrier, "
    << at_grid << " at a grid sync, " << at_warp << " at warp collectives";
  for (size_t w = 0; w < b.warps.size(); ++w)
    for (const Pending& p : b.warps[w].pending)
      s << "; warp " << w << " waits in " << p.what << " (mask " << lanes_str(p.mask)
        << ", arrived " << lanes_str(p.arrived) << ", exited " << lanes_str(b.warps[w].exited)
        << ")";
  return s.str();
}

void run_block(Block& b) {
  Launch& L = *b.launch;
  poison_static_shared();
  if (b.dyn_smem) std::memset(b.dyn_smem, 0xFF, b.dyn_bytes);
  const int n = int(b.fibers.size());
  for (Warp& w : b.warps) {
    w.exited = 0;
    w.pending.clear();
  }
  for (Fiber* f : b.fibers) {
    f->state = kRunnable;
    f->async.clear();
    f->async_groups = 0;
    prepare(f);
  }
  b.alive = n;
  std::fill(std::begin(b.bar_arrived), std::end(b.bar_arrived), 0);
  std::fill(std::begin(b.bar_count), std::end(b.bar_count), 0);
  b.phase = 0;
  std::vector<int> order;
  make_order(b, order);
  for (;;) {
    bool ran = false;
    for (int i : order) {
      Fiber* f = b.fibers[i];
      if (f->state != kRunnable) continue;
      resume(b, f);
      ran = true;
      if (L.failed.load(std::memory_order_relaxed)) return;
    }
    if (ran) continue;
    if (b.alive == 0) return;
    bool released = release_barriers(b);
    if (!released) {
      int at_grid = 0;
      for (Fiber* f : b.fibers) at_grid += f->state == kAtGrid;
      if (at_grid == b.alive && L.cooperative) {
        L.grid_barrier.arrive_and_wait();
        if (L.failed.load()) return;
        for (Fiber* f : b.fibers)
          if (f->state == kAtGrid) f->state = kRunnable;
        released = true;
      }
    }
    if (!released) {
      abort_launch(L, deadlock_report(b));
      return;
    }
    ++b.phase;
    make_order(b, order);
  }
}

// A worker: fibers for one block shape, reused across the blocks it runs.
struct Worker {
  Block block;
  std::vector<char*> stacks;
  std::unique_ptr<unsigned char[]> smem_owner;

  explicit Worker(Launch& L) {
    const int n = L.threads_per_block();
    block.launch = &L;
    block.fibers.resize(n);
    block.warps.resize((n + 31) / 32);
    for (int t = 0; t < n; ++t) {
      char* s = take_stack();
      stacks.push_back(s);
      Fiber* f = new (s) Fiber();
      f->block = &block;
      f->linear = unsigned(t);
      f->warp = unsigned(t) / 32;
      f->lane = unsigned(t) % 32;
      f->thread_idx = Dim3{unsigned(t) % L.block.x, (unsigned(t) / L.block.x) % L.block.y,
                           unsigned(t) / (L.block.x * L.block.y)};
      f->stack_lo = s + 2 * page_bytes();
      f->stack_hi = s + kStackBytes;
#if !defined(__x86_64__)
      f->ctx = new ucontext_t;
#endif
      block.fibers[t] = f;
      block.warps[f->warp].exists |= 1u << f->lane;
    }
    if (L.smem) {
      // Heap, exact size: the AddressSanitizer build then catches accesses past its end.
      block.dyn_smem = static_cast<unsigned char*>(::operator new(L.smem, std::align_val_t(128)));
      block.dyn_bytes = L.smem;
    }
  }
  ~Worker() {
    for (Fiber* f : block.fibers) {
#if !defined(__x86_64__)
      delete static_cast<ucontext_t*>(f->ctx);
#endif
      f->~Fiber();
    }
    for (char* s : stacks) give_stack(s);
    if (block.dyn_smem) ::operator delete(block.dyn_smem, std::align_val_t(128));
  }
  void run(int64_t linear) {
    Launch& L = *block.launch;
    block.linear = linear;
    block.idx = Dim3{unsigned(linear % L.grid.x), unsigned((linear / L.grid.x) % L.grid.y),
                     unsigned(linear / (int64_t(L.grid.x) * L.grid.y))};
    run_block(block);
  }
};

std::string qualified_name(const char* pretty) {
  // "... kernel_name() [with auto K = NAME]" (GCC) / "... [K = NAME]" (clang).
  std::string s(pretty);
  const size_t eq = s.find("K = ");
  if (eq == std::string::npos) return s;
  std::string name = s.substr(eq + 4);
  const size_t end = name.find_first_of(";]");
  if (end != std::string::npos) name = name.substr(0, end);
  if (!name.empty() && name[0] == '&') name = name.substr(1);
  return name;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Device-side API.

void fiber_main(Fiber* f) {
#if FL_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &f->block->sched_bottom, &f->block->sched_size);
#endif
  Launch& L = *f->block->launch;
  bool aborted = false;
  try {
    L.thunk(L.closure);
  } catch (const FiberAbort&) {
    aborted = true;  // fail() unwound the kernel's frames; leave the handler before switching
  }
  if (aborted) {
    f->state = kAborted;
    yield_to_scheduler(*f);
    std::abort();
  }
  Block& b = *f->block;
  f->state = kDone;
  --b.alive;
  Warp& w = b.warps[f->warp];
  w.exited |= 1u << f->lane;
  for (const Pending& p : w.pending)
    if ((p.mask >> f->lane & 1) && !(p.arrived >> f->lane & 1)) {
      abort_launch(L, where(*f) + " exited while lanes " + lanes_str(p.arrived) + " of warp " +
                          std::to_string(f->warp) + " wait for it in " + p.what + " (mask " +
                          lanes_str(p.mask) + ")");
      break;
    }
  yield_to_scheduler(*f);
  std::abort();  // a finished fiber is never resumed
}

const Dim3& block_idx() { return self().block->idx; }
const Dim3& block_dim() { return self().block->launch->block; }
const Dim3& grid_dim() { return self().block->launch->grid; }
void* dynamic_shared() { return self().block->dyn_smem; }

void fail(const std::string& message) {
  Fiber& f = self();
  abort_launch(*f.block->launch, where(f) + ": " + message);
  throw FiberAbort{};  // caught at the bottom of the fiber (fiber_main)
}

void barrier(int id, int count) {
  Fiber& f = self();
  Block& b = *f.block;
  if (id < 0 || id >= 16) fail("barrier id " + std::to_string(id) + " is outside [0, 16)");
  const int rounded = (int(b.fibers.size()) + 31) / 32 * 32;
  if (count < 0 || count % 32 != 0 || count > rounded)
    fail("barrier thread count " + std::to_string(count) +
         " is not a multiple of 32 within the block");
  if (b.bar_arrived[id] > 0 && b.bar_count[id] != count)
    fail("barrier " + std::to_string(id) + " used with thread counts " +
         std::to_string(b.bar_count[id]) + " and " + std::to_string(count));
  b.bar_count[id] = count;
  ++b.bar_arrived[id];
  f.bar_id = id;
  f.state = kAtBarrier;
  yield_to_scheduler(f);
}

void grid_sync() {
  Fiber& f = self();
  if (!f.block->launch->cooperative)
    fail("grid sync in a kernel not launched with FL_LAUNCH_COOPERATIVE");
  f.state = kAtGrid;
  yield_to_scheduler(f);
}

void warp_collective_raw(const char* what, uint32_t mask, const void* in, void* out,
                         CollectiveFn fn, void* closure) {
  Fiber& f = self();
  Block& b = *f.block;
  Warp& w = b.warps[f.warp];
  const uint32_t part = mask & w.exists;
  const uint32_t me = 1u << f.lane;
  if (!(part & me))
    fail(std::string(what) + " with mask " + lanes_str(mask) + " that excludes the calling lane " +
         std::to_string(f.lane));
  if (part & w.exited)
    fail(std::string(what) + ": lanes " + lanes_str(part & w.exited) + " of mask " +
         lanes_str(mask) + " have exited");
  Pending* p = nullptr;
  for (Pending& q : w.pending) {
    if (q.mask == part)
      p = &q;
    else if (q.mask & me)
      fail(std::string(what) + " with mask " + lanes_str(part) + " while lanes " +
           lanes_str(q.arrived) + " wait in " + q.what + " with mask " + lanes_str(q.mask));
  }
  if (!p) {
    w.pending.push_back(Pending{what, part, 0, {}, {}});
    p = &w.pending.back();
  } else if (std::strcmp(p->what, what) != 0) {
    fail("lanes of warp " + std::to_string(f.warp) +
         " meet in different warp operations: " + p->what + " and " + what);
  }
  p->in[f.lane] = in;
  p->out[f.lane] = out;
  p->arrived |= me;
  if (p->arrived != part) {
    f.state = kAtWarp;
    yield_to_scheduler(f);
    return;
  }
  fn(p->in, p->out, part, closure);
  for (int l = 0; l < 32; ++l)
    if ((part >> l & 1) && l != int(f.lane)) b.fibers[f.warp * 32 + l]->state = kRunnable;
  w.pending.erase(w.pending.begin() + (p - w.pending.data()));
}

uint32_t live_lanes() {
  const Fiber& f = self();
  const Warp& w = f.block->warps[f.warp];
  return w.exists & ~w.exited;
}

void async_copy(void* dst, const void* src, int bytes, int src_bytes) {
  Fiber& f = self();
  if (src_bytes < 0 || src_bytes > bytes)
    fail("cp.async src-size " + std::to_string(src_bytes) + " outside [0, " +
         std::to_string(bytes) + "]");
  if (reinterpret_cast<uintptr_t>(dst) % bytes ||
      (src_bytes && reinterpret_cast<uintptr_t>(src) % bytes))
    fail("cp.async of " + std::to_string(bytes) + " bytes with a misaligned address");
  f.async.push_back(Fiber::AsyncCopy{dst, src, bytes, src_bytes, -1});
}

void async_commit() {
  Fiber& f = self();
  bool any = false;
  for (auto& c : f.async)
    if (c.group < 0) {
      c.group = f.async_groups;
      any = true;
    }
  (void)any;
  ++f.async_groups;  // an empty group is still a group, as in PTX
}

void async_wait(int n) {
  Fiber& f = self();
  const int64_t limit = f.async_groups - n;  // groups [0, limit) must land
  size_t keep = 0;
  for (size_t i = 0; i < f.async.size(); ++i) {
    auto& c = f.async[i];
    if (c.group >= 0 && c.group < limit) {
      if (c.src_bytes) std::memcpy(c.dst, c.src, size_t(c.src_bytes));
      if (c.bytes > c.src_bytes)
        std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, size_t(c.bytes - c.src_bytes));
    } else {
      f.async[keep++] = c;
    }
  }
  f.async.resize(keep);
}

void async_wait_all() {
  async_commit();
  async_wait(0);
}

void note_float_atomic() {
  self().block->launch->float_atomics.store(true, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------
// Launch side.

Config& config() { return g_config; }

std::vector<LaunchRecord> launch_log() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_log;
}

void clear_log() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_log.clear();
  g_launch_index = 0;
}

std::vector<std::string> kernels_run() {
  std::lock_guard<std::mutex> lock(g_mu);
  return {g_kernels_run.begin(), g_kernels_run.end()};
}

int take_error(std::string* message) {
  std::lock_guard<std::mutex> lock(g_mu);
  const int code = g_error_code;
  if (message) *message = g_error;
  g_error_code = 0;
  g_error.clear();
  return code;
}

int peek_error() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_error_code;
}

void set_max_dynamic_shared(const void* kernel, int bytes) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_max_dyn_smem[kernel] = bytes;
}

void launch_raw(const char* kernel, const void* kernel_id, Dim3 grid, Dim3 block, size_t smem,
                bool cooperative, KernelThunk thunk, void* closure) {
  Launch L;
  L.name = qualified_name(kernel);
  L.grid = grid;
  L.block = block;
  L.smem = smem;
  L.cooperative = cooperative;
  L.thunk = thunk;
  L.closure = closure;
  Config cfg;
  int64_t index;
  int max_dyn = 48 * 1024;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    cfg = g_config;
    index = g_launch_index++;
    auto it = g_max_dyn_smem.find(kernel_id);
    if (it != g_max_dyn_smem.end()) max_dyn = std::max(max_dyn, it->second);
  }
  const bool reorder = cfg.only_launch < 0 || cfg.only_launch == index;
  L.order = reorder ? cfg.order : Order::kForward;
  L.seed = cfg.seed;

  // The limits of an sm_90 device.
  const int64_t threads = int64_t(block.x) * block.y * block.z;
  std::string bad;
  if (threads < 1 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    bad = "block " + dim_str(block);
  else if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.x > 2147483647u || grid.y > 65535 ||
           grid.z > 65535)
    bad = "grid " + dim_str(grid);
  else if (smem > size_t(227 * 1024) || smem > size_t(max_dyn))
    bad = std::to_string(smem) + " bytes of dynamic shared memory (allowed: " +
          std::to_string(std::min(max_dyn, 227 * 1024)) + ")";
  if (!bad.empty()) {
    set_error(kErrorInvalidConfiguration,
              "kernel " + L.name + ": invalid configuration argument: " + bad);
    return;
  }

  const int64_t nblocks = int64_t(grid.x) * grid.y * grid.z;
  int64_t first = cfg.block_begin < 0 ? nblocks + cfg.block_begin : cfg.block_begin;
  int64_t last = cfg.block_end < 0 ? nblocks + cfg.block_end + 1 : cfg.block_end;
  first = std::clamp<int64_t>(first, 0, nblocks);
  last = std::clamp<int64_t>(last, first, nblocks);
  const int64_t count = last - first;

  if (cooperative) {
    // Every block is live at once: one OS thread each.
    if (nblocks > 1024) {
      set_error(kErrorCooperativeLaunchTooLarge,
                "kernel " + L.name + ": cooperative launch of " + std::to_string(nblocks) +
                    " blocks; the emulator keeps at most 1024 live");
      return;
    }
    L.grid_barrier.expected = count;
    std::vector<std::thread> threads_;
    for (int64_t i = first; i < last; ++i)
      threads_.emplace_back([&L, i] {
        Worker w(L);
        w.run(i);
        L.grid_barrier.drop();
      });
    for (auto& t : threads_) t.join();
  } else if (count > 0) {
    int workers =
        cfg.workers > 0 ? cfg.workers : int(std::max(1u, std::thread::hardware_concurrency()));
    workers = int(std::min<int64_t>(workers, count));
    std::atomic<int64_t> next{first};
    auto body = [&] {
      Worker w(L);
      for (int64_t i = next++; i < last && !L.failed.load(); i = next++) w.run(i);
    };
    std::vector<std::thread> threads_;
    for (int t = 0; t < workers; ++t) threads_.emplace_back(body);
    for (auto& t : threads_) t.join();
  }

  std::lock_guard<std::mutex> lock(g_mu);
  g_kernels_run.insert(L.name);
  g_log.push_back(
      LaunchRecord{L.name, grid, block, smem, L.float_atomics.load(), cooperative, count});
}

}  // namespace emu
}  // namespace fl
