// The kernels' thread pool: work split into fixed pieces, run on every core this
// process may use.
//
// Results never depend on the thread count. A kernel cuts its work into pieces by the
// problem alone (a fixed number of batch rows, of weight rows), each piece computing
// its outputs start to finish in a fixed order; threads only choose which pieces they
// run. So no sum is ever split by thread, and a gradient is bit-identical whether one
// thread or sixteen computed it.

#pragma once

#include <algorithm>
#include <functional>

namespace ncps {

// The most threads the pool may have.
constexpr int kMaxThreads = 256;

// The threads the kernels use (the calling thread is one of them); 1 until set.
int thread_count();

// Uses `count` threads from now on (1 <= count <= kMaxThreads); waits for any running
// work first.
void set_thread_count(int count);

// Runs body(i) for every i in [0, pieces), on the pool's threads and the calling one,
// and returns when all are done (rethrowing the first exception a piece threw). Called
// again from inside a piece, or while another thread's call runs, it runs its pieces on
// the calling thread alone: the same results, in the same pieces.
void parallel_for(int pieces, const std::function<void(int)>& body);

// The pieces of `size` items taken `grain` at a time.
inline int pieces_of(int size, int grain) {
  return (size + grain - 1) / grain;
}

// Items [first, first + count) of a range: one piece of work.
struct Piece {
  int first, count;
};

// The `index`-th piece of `size` items taken `grain` at a time.
inline Piece piece_of(int index, int size, int grain) {
  const int first = index * grain;
  return {first, std::min(grain, size - first)};
}

} // namespace ncps
