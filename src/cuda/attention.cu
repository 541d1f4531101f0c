// Paged causal GQA attention (cuda/kernels.h, kernels::attention's semantics) for prefill chunks and decode
// tokens of many sequences in ONE launch.
//
// A block takes one kv head g and a tile of up to R consecutive query rows of one sequence, with H of the
// `group` query heads that share g (all of them, or one when the grid would otherwise be too small to fill
// the GPU, e.g. batch-1 decode): its "items" are the (row, head) pairs, R * H of them, whose queries and f32
// accumulators live in shared memory. It walks the keys its last row may see in tiles of 32: the tile's K and
// V rows are loaded once for all items (coalesced, converted to f32, through the sequence's own block table),
// then each warp scores a key per lane for its items and updates the online softmax (running max m, sum l,
// rescale factor), then every thread adds p . V for its (item, d) elements. Softmax and accumulation are f32;
// masked and padding entries get p = 0 exactly, so they add nothing.
//
// Which (sequence, row tile) a block is comes from a warp-wide prefix scan over the sequences' tile counts,
// so the grid (sum of row tiles, n_kv_heads * group / H) has no idle blocks and needs no block map from the
// host.
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/dev_common.cuh"
#include "cuda/kernels.h"

namespace lp::cuda {

namespace {

constexpr int kKeyTile = 32;   // keys per tile: lane l scores key l of the tile
constexpr int kThreads = 128;  // 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kMaxHeadDim = 256;
constexpr int kItemsTarget = 8;  // rows * heads per block when the group is small (K/V reuse across rows)
constexpr int kMaxGroup = 32;

struct AttnArgs {
  const void* k;
  const void* v;
  int block_size;
  int n_kv_heads;
  int head_dim;
  const float* q;  // (T, n_heads, head_dim)
  const AttnSeqDev* seqs;
  int n_seqs;
  const int32_t* block_tables;
  int n_heads;
  int group;  // n_heads / n_kv_heads
  int heads;  // query heads per block (H, divides group)
  int rows;   // query rows per block (R)
  float scale;
  void* out;
  DType out_dtype;
};

// Shared-memory floats of one block: queries and accumulators (items, hd), the K tile (32, kstride: padded
// so that lanes reading one column of different keys hit different banks), the V tile (32, hd), the
// probabilities (items, 32) and m, l, rescale factor per item.
inline int key_stride(int hd) { return hd % 2 == 0 ? hd + 1 : hd; }
inline size_t smem_floats(int items, int hd) {
  return 2 * static_cast<size_t>(items) * hd + static_cast<size_t>(kKeyTile) * key_stride(hd) +
         static_cast<size_t>(kKeyTile) * hd + static_cast<size_t>(items) * kKeyTile + 3 * static_cast<size_t>(items);
}

template <DType KD>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttnArgs a) {
  extern __shared__ float smem[];
  __shared__ int s_seq, s_tile;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  // 1. This block's (sequence, row tile): warp 0 scans the tile counts 32 sequences at a time.
  if (tid == 0) s_seq = -1;
  __syncthreads();
  if (warp == 0) {
    const int bid = static_cast<int>(blockIdx.x);
    int base = 0;  // tiles of the sequences before this chunk
    for (int c = 0; c < a.n_seqs; c += 32) {
      const int i = c + lane;
      const int n = i < a.n_seqs ? (a.seqs[i].q_len + a.rows - 1) / a.rows : 0;
      int incl = n;  // inclusive prefix sum over the chunk's lanes
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const int o = __shfl_up_sync(dev::kFullMask, incl, off);
        if (lane >= off) incl += o;
      }
      const bool mine = n > 0 && bid >= base + incl - n && bid < base + incl;
      if (mine) {
        s_seq = i;
        s_tile = bid - (base + incl - n);
      }
      const unsigned found = __ballot_sync(dev::kFullMask, mine);
      base += __shfl_sync(dev::kFullMask, incl, 31);
      if (found) break;
    }
  }
  __syncthreads();
  if (s_seq < 0) return;  // never: the grid is sized from the same counts (uniform for the block)
  const AttnSeqDev sq = a.seqs[s_seq];
  const int head_splits = a.group / a.heads;
  const int g = static_cast<int>(blockIdx.y) / head_splits;                 // kv head
  const int h0 = g * a.group + (static_cast<int>(blockIdx.y) - g * head_splits) * a.heads;  // first q head
  const int hd = a.head_dim, H = a.heads;
  const int items = H * a.rows;
  const int i0 = s_tile * a.rows;                       // first query row of the tile, within the sequence
  const int n_rows = min(a.rows, sq.q_len - i0);        // >= 1
  const int pos0 = sq.ctx_len - sq.q_len + i0;          // position of that row
  const int n_keys = pos0 + n_rows;                     // the last row sees keys 0 .. pos0 + n_rows - 1
  const int ks = hd % 2 == 0 ? hd + 1 : hd;
  float* q_s = smem;                         // (items, hd)
  float* acc_s = q_s + items * hd;           // (items, hd)
  float* k_s = acc_s + items * hd;           // (32, ks)
  float* v_s = k_s + kKeyTile * ks;          // (32, hd)
  float* p_s = v_s + kKeyTile * hd;          // (items, 32)
  float* m_s = p_s + items * kKeyTile;       // (items)
  float* l_s = m_s + items;                  // (items)
  float* corr_s = l_s + items;               // (items)

  // Item it = r * H + hl: query row i0 + r of the sequence, head h0 + hl. Items never interact, so a row's
  // bits do not depend on R, H or the other items of its block.
  auto q_index = [&](int it, int d) -> int64_t {
    const int r = it / H, hl = it - r * H;
    const int64_t row = static_cast<int64_t>(sq.q_begin) + i0 + r;
    return (row * a.n_heads + h0 + hl) * hd + d;
  };

  // 2. Queries in, accumulators and softmax state zeroed (padding items, r >= n_rows, get q = 0).
  for (int e = tid; e < items * hd; e += kThreads) {
    const int it = e / hd, d = e - it * hd;
    q_s[e] = it / H < n_rows ? a.q[q_index(it, d)] : 0.f;
    acc_s[e] = 0.f;
  }
  for (int it = tid; it < items; it += kThreads) {
    m_s[it] = -INFINITY;
    l_s[it] = 0.f;
  }

  const int64_t kv_heads = a.n_kv_heads, bs = a.block_size;
  for (int t0 = 0; t0 < n_keys; t0 += kKeyTile) {
    const int nk = min(kKeyTile, n_keys - t0);
    __syncthreads();  // the previous tile's readers of k_s, v_s, p_s, corr_s are done (and step 2's writes)

    // 3. The tile's K and V rows, f32, keys past the end zero (they get p = 0; zero keeps 0 * V finite).
    for (int e = tid; e < kKeyTile * hd; e += kThreads) {
      const int key = e / hd, d = e - key * hd;
      float kv = 0.f, vv = 0.f;
      if (key < nk) {
        const int j = t0 + key;
        const int64_t blk = a.block_tables[sq.table_begin + j / a.block_size];
        const int64_t off = ((blk * kv_heads + g) * bs + j % a.block_size) * hd + d;
        kv = dev::load<KD>(a.k, off);
        vv = dev::load<KD>(a.v, off);
      }
      k_s[key * ks + d] = kv;
      v_s[key * hd + d] = vv;
    }
    __syncthreads();

    // 4. Scores and the online softmax: warp w owns items w, w + 4, ...; lane l scores key t0 + l.
    for (int it = warp; it < items; it += kWarps) {
      const int r = it / H;
      const int j = t0 + lane;
      const bool valid = r < n_rows && lane < nk && j <= pos0 + r;
      float s = -INFINITY;
      if (valid) {
        const float* qv = q_s + it * hd;
        const float* kv = k_s + lane * ks;
        float dot = 0.f;
        for (int d = 0; d < hd; ++d) dot = fmaf(qv[d], kv[d], dot);
        s = dot * a.scale;
      }
      const float m_old = m_s[it];
      const float m_new = fmaxf(m_old, dev::warp_max(s));
      // m_new is -inf only while the item has seen no key (a padding item): nothing to rescale then.
      const float corr = m_new == -INFINITY ? 1.f : expf(m_old - m_new);
      const float p = valid ? expf(s - m_new) : 0.f;
      const float psum = dev::warp_sum(p);
      p_s[it * kKeyTile + lane] = p;
      __syncwarp();  // every lane has read m_s[it] before lane 0 replaces it
      if (lane == 0) {
        m_s[it] = m_new;
        l_s[it] = l_s[it] * corr + psum;
        corr_s[it] = corr;
      }
    }
    __syncthreads();

    // 5. acc = acc * corr + sum_key p * V, keys ascending; a thread per (item, d) of the real rows.
    for (int e = tid; e < items * hd; e += kThreads) {
      const int it = e / hd, d = e - it * hd;
      if (it / H >= n_rows) continue;
      const float* p = p_s + it * kKeyTile;
      float o = acc_s[e] * corr_s[it];
      for (int key = 0; key < nk; ++key) o = fmaf(p[key], v_s[key * hd + d], o);
      acc_s[e] = o;
    }
  }
  __syncthreads();

  // 6. out = acc / l (l >= exp(0) = 1 share of the max key, never 0 for a real row: key 0 is always visible).
  for (int e = tid; e < items * hd; e += kThreads) {
    const int it = e / hd, d = e - it * hd;
    if (it / H >= n_rows) continue;
    dev::store_any(a.out, q_index(it, d), acc_s[e] / l_s[it], a.out_dtype);
  }
}

}  // namespace

void attention(const PagedKvDev& cache, const float* q, std::span<const AttnSeqDev> seqs_host,
               const AttnSeqDev* seqs, const int32_t* block_tables, int n_heads, float scale, void* out,
               DType out_dtype, cudaStream_t stream) {
  const int hd = cache.head_dim;
  LP_CHECK(hd > 0 && hd <= kMaxHeadDim, "cuda::attention: head_dim {} not in 1..{}", hd, kMaxHeadDim);
  LP_CHECK(cache.n_kv_heads > 0 && cache.block_size > 0 && n_heads > 0 && n_heads % cache.n_kv_heads == 0,
           "cuda::attention: {} heads over {} kv heads, block size {}", n_heads, cache.n_kv_heads,
           cache.block_size);
  LP_CHECK(cache.dtype == DType::kF32 || cache.dtype == DType::kBF16 || cache.dtype == DType::kF16,
           "cuda::attention: cache dtype");
  LP_CHECK(out_dtype == DType::kF32 || out_dtype == DType::kBF16 || out_dtype == DType::kF16,
           "cuda::attention: out dtype");
  const int group = n_heads / cache.n_kv_heads;
  LP_CHECK(group <= kMaxGroup, "cuda::attention: {} query heads per kv head (at most {})", group, kMaxGroup);
  if (seqs_host.empty()) return;
  LP_CHECK(seqs_host.size() <= 0x7fffffff, "cuda::attention: {} sequences", seqs_host.size());

  // Heads and rows per block. All heads of a kv head share its K/V loads, and rows are added up to
  // kItemsTarget items (no more than the longest query run: a decode-only step gets one row per block). When
  // that leaves fewer blocks than twice the multiprocessors (small decode batches), each block takes one head
  // instead: `group` times the blocks, each K/V tile read by `group` blocks (mostly from L2).
  int max_q = 0;
  for (const AttnSeqDev& s : seqs_host) {
    LP_CHECK(s.q_len >= 0 && s.q_len <= s.ctx_len && s.q_begin >= 0 && s.table_begin >= 0,
             "cuda::attention: sequence q_begin {} q_len {} ctx_len {} table_begin {}", s.q_begin, s.q_len,
             s.ctx_len, s.table_begin);
    max_q = std::max(max_q, s.q_len);
  }
  if (max_q == 0) return;
  auto count_tiles = [&](int rows) {
    int64_t n = 0;
    for (const AttnSeqDev& s : seqs_host) n += (s.q_len + rows - 1) / rows;
    return n;
  };
  int heads = group;
  int rows = std::max(1, std::min(kItemsTarget / heads, max_q));
  int64_t tiles = count_tiles(rows);
  if (group > 1) {
    int dev_id = 0, sms = 0;
    check_cuda(cudaGetDevice(&dev_id), "cuda::attention: device");
    check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev_id), "cuda::attention: SMs");
    if (tiles * cache.n_kv_heads < 2 * static_cast<int64_t>(sms)) {
      heads = 1;
      rows = std::max(1, std::min(kItemsTarget, max_q));
      tiles = count_tiles(rows);
    }
  }
  const int64_t grid_y = static_cast<int64_t>(cache.n_kv_heads) * (group / heads);
  LP_CHECK(tiles <= 0x7fffffff && grid_y <= 65535, "cuda::attention: grid {} x {}", tiles, grid_y);
  LP_CHECK(cache.k && cache.v && q && seqs && block_tables && out, "cuda::attention: null pointer");

  const size_t smem = smem_floats(heads * rows, hd) * sizeof(float);
  AttnArgs args{cache.k, cache.v, cache.block_size, cache.n_kv_heads, hd, q, seqs,
                static_cast<int>(seqs_host.size()), block_tables, n_heads, group, heads, rows, scale, out,
                out_dtype};
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(grid_y));
  visit_dtype(cache.dtype, [&](auto kd) {
    auto* kernel = attention_kernel<decltype(kd)::value>;
    // Past the default 48 KiB a kernel must opt in (head_dim 256, or large groups); Hopper allows 227 KiB.
    if (smem > 48 * 1024)
      check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
                 "cuda::attention: shared memory limit");
    kernel<<<grid, kThreads, smem, stream>>>(args);
  });
  check_launch("cuda::attention");
}

}  // namespace lp::cuda
