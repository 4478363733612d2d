// Fused CPU kernels of the folded attention (see neuroalign/models/folded.py for the maths).
//
// Layout (float32, contiguous), per head h, with K neurons:
//   MM (H, 2K, 2K): M1 = MM[h, :K, :K], M2 = MM[h, :K, K:], M3 = MM[h, K:, :K], M4 = MM[h, K:, K:]
//   NN (H, K, 2K):  N1 = NN[h, :, :K],  N2 = NN[h, :, K:]
//   s_bij = r_bi r_bj M1_ij + r_bi M2_ij + r_bj M3_ij + M4_ij        (softmax over j)
//   z_bi  = sum_h sum_j softmax(s_b)_ij (r_bj N1_ij + N2_ij)
//
// The eager PyTorch path makes ~30 passes over every (sample, row, column) element; here each
// element is computed once in the forward and once in the backward, in registers. Work is split
// over rows (h, i) with at::parallel_for, so every thread writes its own rows of the gradient
// accumulators: no atomics, and the result does not depend on the number of threads.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr float kLog2e = 1.44269504088896341f;
constexpr int64_t kColumnBlock = 128;  // backward: columns per tile (12 rows of it stay in L1)

// 2^x for x <= 0: x = n + t with |t| <= 1/2, 2^t from a degree-5 polynomial (least-squares fit
// on Chebyshev nodes, relative error 1.9e-7), 2^n added to the exponent bits. Arguments below
// -125 are clamped (2^-125 is below float32 rounding next to the softmax's largest term, 1).
// Written without branches or calls so that the compiler vectorises it.
inline float exp2_nonpos(float x) {
  x = x < -125.0f ? -125.0f : x;
  const float n = __builtin_rintf(x);
  const float t = x - n;
  float p = 1.3218672247603536e-3f;
  p = p * t + 9.671698324382305e-3f;
  p = p * t + 5.550893023610115e-2f;
  p = p * t + 2.4022237956523895e-1f;
  p = p * t + 6.931468844413757e-1f;
  p = p * t + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  bits += static_cast<int32_t>(n) * (1 << 23);
  std::memcpy(&p, &bits, sizeof(p));
  return p;
}

void check_inputs(const torch::Tensor& r, const torch::Tensor& mm, const torch::Tensor& nn) {
  TORCH_CHECK(r.dim() == 2, "folded kernel: responses must be (B, K), got ", r.sizes());
  const int64_t k = r.size(1);
  TORCH_CHECK(mm.dim() == 3 && mm.size(1) == 2 * k && mm.size(2) == 2 * k,
              "folded kernel: MM must be (H, 2K, 2K) with K = ", k, ", got ", mm.sizes());
  TORCH_CHECK(nn.dim() == 3 && nn.size(0) == mm.size(0) && nn.size(1) == k && nn.size(2) == 2 * k,
              "folded kernel: NN must be (H, K, 2K) with K = ", k, ", got ", nn.sizes());
  for (const auto* t : {&r, &mm, &nn}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == torch::kFloat32 && t->is_contiguous(),
                "folded kernel: expected contiguous float32 CPU tensors");
  }
}

}  // namespace

// Returns (z (B, K) summed over heads, lse2 (B, H, K), zh (B, H, K)); lse2 and zh feed the backward.
std::vector<torch::Tensor> folded_forward(torch::Tensor r, torch::Tensor mm, torch::Tensor nn) {
  check_inputs(r, mm, nn);
  const int64_t B = r.size(0), K = r.size(1), H = mm.size(0), W = 2 * K;
  auto lse = torch::empty({B, H, K}, r.options());
  auto zh = torch::empty({B, H, K}, r.options());
  const float* R = r.data_ptr<float>();
  const float* MM = mm.data_ptr<float>();
  const float* NN = nn.data_ptr<float>();
  float* L = lse.data_ptr<float>();
  float* Z = zh.data_ptr<float>();
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

  at::parallel_for(0, H * K, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(6 * K);
    float *sa = buf.data(), *sc = sa + K, *a1 = sc + K, *a2 = a1 + K, *a3 = a2 + K, *a4 = a3 + K;
    for (int64_t hi = begin; hi < end; ++hi) {
      const int64_t h = hi / K, i = hi % K;
      const float* top = MM + (h * W + i) * W;      // row i: M1 | M2
      const float* bottom = MM + (h * W + K + i) * W;  // row K + i: M3 | M4
      for (int64_t j = 0; j < K; ++j) {  // logits in base 2 from here on
        a1[j] = top[j] * kLog2e;
        a2[j] = top[K + j] * kLog2e;
        a3[j] = bottom[j] * kLog2e;
        a4[j] = bottom[K + j] * kLog2e;
      }
      const float* b1 = NN + (h * K + i) * W;
      const float* b2 = b1 + K;
      auto store = [&](int64_t b, float mx, float den, float num) {
        const int64_t o = (b * H + h) * K + i;
        const bool ok = std::isfinite(mx) && std::isfinite(den) && den > 0.f;
        L[o] = ok ? mx + std::log2(den) : kNaN;
        Z[o] = ok ? num / den : kNaN;
      };
      int64_t b = 0;
      for (; b + 1 < B; b += 2) {  // two samples per pass share the row loads
        const float* ra = R + b * K;
        const float* rc = ra + K;
        const float ria = ra[i], ric = rc[i];
        float mxa = -INFINITY, mxc = -INFINITY;
#pragma omp simd reduction(max : mxa, mxc)
        for (int64_t j = 0; j < K; ++j) {
          const float va = ria * (ra[j] * a1[j] + a2[j]) + (ra[j] * a3[j] + a4[j]);
          const float vc = ric * (rc[j] * a1[j] + a2[j]) + (rc[j] * a3[j] + a4[j]);
          sa[j] = va;
          sc[j] = vc;
          mxa = va > mxa ? va : mxa;
          mxc = vc > mxc ? vc : mxc;
        }
        float dena = 0.f, numa = 0.f, denc = 0.f, numc = 0.f;
#pragma omp simd reduction(+ : dena, numa, denc, numc)
        for (int64_t j = 0; j < K; ++j) {
          const float ea = exp2_nonpos(sa[j] - mxa), ec = exp2_nonpos(sc[j] - mxc);
          dena += ea;
          denc += ec;
          numa += ea * (ra[j] * b1[j] + b2[j]);
          numc += ec * (rc[j] * b1[j] + b2[j]);
        }
        store(b, mxa, dena, numa);
        store(b + 1, mxc, denc, numc);
      }
      for (; b < B; ++b) {
        const float* ra = R + b * K;
        const float ria = ra[i];
        float mxa = -INFINITY;
#pragma omp simd reduction(max : mxa)
        for (int64_t j = 0; j < K; ++j) {
          const float va = ria * (ra[j] * a1[j] + a2[j]) + (ra[j] * a3[j] + a4[j]);
          sa[j] = va;
          mxa = va > mxa ? va : mxa;
        }
        float dena = 0.f, numa = 0.f;
#pragma omp simd reduction(+ : dena, numa)
        for (int64_t j = 0; j < K; ++j) {
          const float ea = exp2_nonpos(sa[j] - mxa);
          dena += ea;
          numa += ea * (ra[j] * b1[j] + b2[j]);
        }
        store(b, mxa, dena, numa);
      }
    }
  });
  return {H == 1 ? zh.view({B, K}) : zh.sum(1), lse, zh};
}

// Writes the gradients of sum_bi g_bi z_bi with respect to MM and NN into dmm and dnn (same layouts;
// every element is written, so they may come uninitialised).
// P_bij = 2^(s2_bij - lse2_bi) is recomputed; dS = P * g_i * (W_ij - zh_bi), W_ij = r_j N1 + N2.
void folded_backward(torch::Tensor r, torch::Tensor g, torch::Tensor lse, torch::Tensor zh,
                     torch::Tensor mm, torch::Tensor nn, torch::Tensor dmm, torch::Tensor dnn) {
  check_inputs(r, mm, nn);
  check_inputs(g, dmm, dnn);
  const int64_t B = r.size(0), K = r.size(1), H = mm.size(0), W = 2 * K;
  TORCH_CHECK(g.sizes() == r.sizes() && lse.sizes() == zh.sizes() && lse.size(0) == B &&
                  lse.size(1) == H && lse.size(2) == K && lse.is_contiguous() && zh.is_contiguous(),
              "folded kernel: inconsistent backward inputs");
  const float *R = r.data_ptr<float>(), *G = g.data_ptr<float>();
  const float *L = lse.data_ptr<float>(), *Z = zh.data_ptr<float>();
  const float *MM = mm.data_ptr<float>(), *NN = nn.data_ptr<float>();
  float *DM = dmm.data_ptr<float>(), *DN = dnn.data_ptr<float>();

  at::parallel_for(0, H * K, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float a1[kColumnBlock], a2[kColumnBlock], a3[kColumnBlock], a4[kColumnBlock];
    for (int64_t hi = begin; hi < end; ++hi) {
      const int64_t h = hi / K, i = hi % K;
      const int64_t top = (h * W + i) * W, bottom = (h * W + K + i) * W, nrow = (h * K + i) * W;
      for (int64_t j0 = 0; j0 < K; j0 += kColumnBlock) {
        const int64_t n = std::min(kColumnBlock, K - j0);
        for (int64_t j = 0; j < n; ++j) {
          a1[j] = MM[top + j0 + j] * kLog2e;
          a2[j] = MM[top + K + j0 + j] * kLog2e;
          a3[j] = MM[bottom + j0 + j] * kLog2e;
          a4[j] = MM[bottom + K + j0 + j] * kLog2e;
        }
        const float *b1 = NN + nrow + j0, *b2 = NN + nrow + K + j0;
        float *d1 = DM + top + j0, *d2 = DM + top + K + j0, *d3 = DM + bottom + j0, *d4 = DM + bottom + K + j0;
        float *e1 = DN + nrow + j0, *e2 = DN + nrow + K + j0;
        for (float* acc : {d1, d2, d3, d4, e1, e2}) std::fill(acc, acc + n, 0.f);
        int64_t b = 0;
        for (; b + 1 < B; b += 2) {  // two samples per pass share the tile's loads and stores
          const float* ra = R + b * K + j0;
          const float* rc = ra + K;
          const int64_t oa = (b * H + h) * K + i, oc = ((b + 1) * H + h) * K + i;
          const float ria = R[b * K + i], gia = G[b * K + i], lia = L[oa], zia = Z[oa];
          const float ric = R[(b + 1) * K + i], gic = G[(b + 1) * K + i], lic = L[oc], zic = Z[oc];
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const float rja = ra[j], rjc = rc[j];
            const float qa = exp2_nonpos(ria * (rja * a1[j] + a2[j]) + (rja * a3[j] + a4[j]) - lia) * gia;
            const float qc = exp2_nonpos(ric * (rjc * a1[j] + a2[j]) + (rjc * a3[j] + a4[j]) - lic) * gic;
            const float dsa = qa * (rja * b1[j] + b2[j] - zia);
            const float dsc = qc * (rjc * b1[j] + b2[j] - zic);
            e2[j] += qa + qc;
            e1[j] += qa * rja + qc * rjc;
            d4[j] += dsa + dsc;
            d3[j] += dsa * rja + dsc * rjc;
            const float ua = dsa * ria, uc = dsc * ric;
            d2[j] += ua + uc;
            d1[j] += ua * rja + uc * rjc;
          }
        }
        for (; b < B; ++b) {
          const float* ra = R + b * K + j0;
          const int64_t oa = (b * H + h) * K + i;
          const float ria = R[b * K + i], gia = G[b * K + i], lia = L[oa], zia = Z[oa];
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const float rja = ra[j];
            const float qa = exp2_nonpos(ria * (rja * a1[j] + a2[j]) + (rja * a3[j] + a4[j]) - lia) * gia;
            const float dsa = qa * (rja * b1[j] + b2[j] - zia);
            e2[j] += qa;
            e1[j] += qa * rja;
            d4[j] += dsa;
            d3[j] += dsa * rja;
            const float ua = dsa * ria;
            d2[j] += ua;
            d1[j] += ua * rja;
          }
        }
      }
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("folded_forward", &folded_forward, "folded attention forward (CPU, float32)");
  m.def("folded_backward", &folded_backward, "folded attention backward (CPU, float32)");
}
