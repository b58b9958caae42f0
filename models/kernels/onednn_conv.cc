// A 2-D convolution by oneDNN (forward, input gradient and weight gradient)
// and a training batch norm with the residual add and ReLU fused into it
// (OpenMP loops; section "batch normalization" below), as XLA FFI handlers
// for the CPU backend (models/kernels/onednn.py builds and registers them).
//
// XLA:CPU computes the weight gradient at a fraction of the speed of the
// forward convolution and transposes operands around all three
// (experiments/bench.py, breakdown and profile sections); oneDNN's kernels
// are what PyTorch runs for the same operations on CPU.
//
//   x:  f32[N, H, W, C]        (NHWC, row-major)
//   y:  f32[N, Ho, Wo, O]      (dy likewise)
//   w:  f32[KH, KW, C, O]      (HWIO, flax's kernel layout)
//
//   DistillOnednnConvForward(x, w) -> y
//   DistillOnednnConvInputGrad(dy, w) -> dx     (dx has x's shape)
//   DistillOnednnConvWeightGrad(x, dy) -> dw
//
// Attribute `layout`: 0 runs oneDNN's direct kernels on the NHWC buffers as
// they are (weights reordered into the kernel's blocked layout); 1 lets
// oneDNN choose every layout (blocked activations: reorders in and out of
// each call); 2 runs oneDNN's Winograd kernels (F(4x4, 3x3): 3x3, stride 1;
// blocked layouts with reorders) and falls back to 0 where this CPU or
// shape has none. Primitives, their blocked buffers and reorders are
// created once per shape, layout and thread, and reused.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <unordered_map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

enum Kind : int64_t { kForward = 0, kInputGrad = 1, kWeightGrad = 2 };

// The convolution: shapes in oneDNN's logical order (NCHW, OIHW).
struct Geometry {
  dnnl::memory::dims src, wei, dst, strides, pad_l, pad_r;
};

using Key = std::tuple<int64_t, int64_t, std::vector<int64_t>>;

// One operand of a call: its user (XLA) layout, the kernel's, and the
// reorder between them when they differ.
struct Operand {
  dnnl::memory::desc user, kernel;
  dnnl::memory blocked;          // the kernel-layout buffer, when reordered
  dnnl::reorder reorder;         // user -> kernel (inputs) or back (output)
  bool reordered = false;
};

struct Plan {
  dnnl::primitive primitive;
  std::string impl;              // oneDNN's name of the implementation
  int out_arg = 0;
  std::vector<int> in_args;
  std::vector<Operand> ins;
  Operand out;
};

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<Key, std::unique_ptr<Plan>> plans;
};

Context& ThreadContext() {
  thread_local Context context;
  return context;
}

Operand MakeOperand(Context& ctx, const dnnl::memory::desc& user,
                    const dnnl::memory::desc& kernel, bool is_input) {
  Operand op;
  op.user = user;
  op.kernel = kernel;
  op.reordered = kernel != user;
  if (op.reordered) {
    op.blocked = dnnl::memory(kernel, ctx.engine);
    dnnl::memory u(user, ctx.engine, nullptr);
    op.reorder = is_input ? dnnl::reorder(u, op.blocked)
                          : dnnl::reorder(op.blocked, u);
  }
  return op;
}

dnnl::memory::desc Desc(const dnnl::memory::dims& d, tag t) {
  return dnnl::memory::desc(d, dt::f32, t);
}

// The forward primitive descriptor (also the hint of both gradients).
dnnl::convolution_forward::primitive_desc ForwardPd(Context& ctx,
                                                    const Geometry& g,
                                                    tag act,
                                                    dnnl::algorithm alg) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::convolution_forward::primitive_desc(
      ctx.engine, dnnl::prop_kind::forward_training, alg, Desc(g.src, act),
      Desc(g.wei, tag::any), Desc(g.dst, act), g.strides, g.pad_l, g.pad_r);
#else
  return dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(
          dnnl::prop_kind::forward_training, alg, Desc(g.src, act),
          Desc(g.wei, tag::any), Desc(g.dst, act), g.strides, g.pad_l,
          g.pad_r),
      ctx.engine);
#endif
}

// The primitive descriptor of gradient primitive P (the input's or the
// weights'; their descriptors take the same arguments), hinted by `fwd`.
template <typename P>
typename P::primitive_desc GradPd(
    Context& ctx, const Geometry& g, tag act, dnnl::algorithm alg,
    const dnnl::convolution_forward::primitive_desc& fwd) {
#if DNNL_VERSION_MAJOR >= 3
  return typename P::primitive_desc(
      ctx.engine, alg, Desc(g.src, act),
      Desc(g.wei, tag::any), Desc(g.dst, act), g.strides, g.pad_l, g.pad_r,
      fwd);
#else
  return typename P::primitive_desc(
      typename P::desc(alg, Desc(g.src, act),
                       Desc(g.wei, tag::any), Desc(g.dst, act), g.strides,
                       g.pad_l, g.pad_r),
      ctx.engine, fwd);
#endif
}

std::unique_ptr<Plan> MakePlanFor(
    Context& ctx, Kind kind, const Geometry& g, tag act,
    dnnl::algorithm alg = dnnl::algorithm::convolution_direct) {
  const auto user_src = Desc(g.src, tag::nhwc);
  const auto user_dst = Desc(g.dst, tag::nhwc);
  const auto user_wei = Desc(g.wei, tag::hwio);
  auto fwd = ForwardPd(ctx, g, act, alg);
  auto plan = std::make_unique<Plan>();
  if (kind == kForward) {
    plan->impl = fwd.impl_info_str();
    plan->primitive = dnnl::convolution_forward(fwd);
    plan->in_args = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS};
    plan->ins = {MakeOperand(ctx, user_src, fwd.src_desc(), true),
                 MakeOperand(ctx, user_wei, fwd.weights_desc(), true)};
    plan->out_arg = DNNL_ARG_DST;
    plan->out = MakeOperand(ctx, user_dst, fwd.dst_desc(), false);
  } else if (kind == kInputGrad) {
    auto pd = GradPd<dnnl::convolution_backward_data>(ctx, g, act, alg, fwd);
    plan->impl = pd.impl_info_str();
    plan->primitive = dnnl::convolution_backward_data(pd);
    plan->in_args = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS};
    plan->ins = {MakeOperand(ctx, user_dst, pd.diff_dst_desc(), true),
                 MakeOperand(ctx, user_wei, pd.weights_desc(), true)};
    plan->out_arg = DNNL_ARG_DIFF_SRC;
    plan->out = MakeOperand(ctx, user_src, pd.diff_src_desc(), false);
  } else {
    auto pd = GradPd<dnnl::convolution_backward_weights>(ctx, g, act, alg, fwd);
    plan->impl = pd.impl_info_str();
    plan->primitive = dnnl::convolution_backward_weights(pd);
    plan->in_args = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST};
    plan->ins = {MakeOperand(ctx, user_src, pd.src_desc(), true),
                 MakeOperand(ctx, user_dst, pd.diff_dst_desc(), true)};
    plan->out_arg = DNNL_ARG_DIFF_WEIGHTS;
    plan->out = MakeOperand(ctx, user_wei, pd.diff_weights_desc(), false);
  }
  return plan;
}

// Layout 0 asks for NHWC kernels; where oneDNN has only its reference
// implementation for them, the blocked layouts (1) are used instead.
// Layout 2 asks for Winograd kernels, and is layout 0 where there are none
// (oneDNN 2.x has them for AVX-512 only; creating the descriptor throws).
std::unique_ptr<Plan> MakePlan(Context& ctx, Kind kind, const Geometry& g,
                               int64_t layout) {
  if (layout == 2) {
    try {
      auto plan = MakePlanFor(ctx, kind, g, tag::any,
                              dnnl::algorithm::convolution_winograd);
      if (plan->impl.find("wino") != std::string::npos) return plan;
    } catch (const dnnl::error&) {
    }
    layout = 0;
  }
  if (layout == 0) {
    auto plan = MakePlanFor(ctx, kind, g, tag::nhwc);
    if (plan->impl.rfind("ref", 0) != 0) return plan;
  }
  return MakePlanFor(ctx, kind, g, tag::any);
}

// Runs `kind` on user buffers `a`, `b` into `out`, whose NHWC / HWIO shapes
// are `xd` (x), `wd` (w) and `yd` (y).
ffi::Error Run(Kind kind, const std::vector<int64_t>& xd,
               const std::vector<int64_t>& wd,
               const std::vector<int64_t>& yd, void* a, void* b, void* out,
               int64_t stride_h, int64_t stride_w, int64_t pad_top,
               int64_t pad_bottom, int64_t pad_left, int64_t pad_right,
               int64_t threads, int64_t layout) {
  if (xd.size() != 4 || wd.size() != 4 || yd.size() != 4) {
    return ffi::Error::InvalidArgument(
        "onednn convolution: operands must be NHWC and HWIO");
  }
  if (wd[2] != xd[3] || wd[3] != yd[3] || yd[0] != xd[0]) {
    return ffi::Error::InvalidArgument(
        "onednn convolution: mismatched channel or batch sizes");
  }
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  try {
    Context& ctx = ThreadContext();
    std::vector<int64_t> shape(xd);
    shape.insert(shape.end(), wd.begin(), wd.end());
    shape.insert(shape.end(), yd.begin(), yd.end());
    shape.insert(shape.end(), {stride_h, stride_w, pad_top, pad_bottom,
                               pad_left, pad_right});
    Key key{kind, layout, shape};
    auto found = ctx.plans.find(key);
    if (found == ctx.plans.end()) {
      Geometry g{{xd[0], xd[3], xd[1], xd[2]},
                 {wd[3], wd[2], wd[0], wd[1]},
                 {yd[0], yd[3], yd[1], yd[2]},
                 {stride_h, stride_w},
                 {pad_top, pad_left},
                 {pad_bottom, pad_right}};
      found = ctx.plans.emplace(key, MakePlan(ctx, kind, g, layout)).first;
    }
    Plan& plan = *found->second;
    std::unordered_map<int, dnnl::memory> args;
    void* user_in[2] = {a, b};
    for (size_t i = 0; i < plan.ins.size(); ++i) {
      Operand& op = plan.ins[i];
      dnnl::memory u(op.user, ctx.engine, user_in[i]);
      if (op.reordered) {
        op.reorder.execute(ctx.stream, u, op.blocked);
        args.emplace(plan.in_args[i], op.blocked);
      } else {
        args.emplace(plan.in_args[i], u);
      }
    }
    dnnl::memory uout(plan.out.user, ctx.engine, out);
    args.emplace(plan.out_arg, plan.out.reordered ? plan.out.blocked : uout);
    plan.primitive.execute(ctx.stream, args);
    if (plan.out.reordered) {
      plan.out.reorder.execute(ctx.stream, plan.out.blocked, uout);
    }
    ctx.stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

template <typename T>
std::vector<int64_t> Dims(const T& buffer) {
  auto d = buffer.dimensions();
  return std::vector<int64_t>(d.begin(), d.end());
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> y, int64_t stride_h,
                       int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                       int64_t pad_left, int64_t pad_right, int64_t threads,
                       int64_t layout) {
  return Run(kForward, Dims(x), Dims(w), Dims(*y), x.typed_data(),
             w.typed_data(), y->typed_data(), stride_h, stride_w, pad_top,
             pad_bottom, pad_left, pad_right, threads, layout);
}

ffi::Error InputGradImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                         ffi::ResultBuffer<ffi::F32> dx, int64_t stride_h,
                         int64_t stride_w, int64_t pad_top,
                         int64_t pad_bottom, int64_t pad_left,
                         int64_t pad_right, int64_t threads, int64_t layout) {
  return Run(kInputGrad, Dims(*dx), Dims(w), Dims(dy), dy.typed_data(),
             w.typed_data(), dx->typed_data(), stride_h, stride_w, pad_top,
             pad_bottom, pad_left, pad_right, threads, layout);
}

ffi::Error WeightGradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::ResultBuffer<ffi::F32> dw, int64_t stride_h,
                          int64_t stride_w, int64_t pad_top,
                          int64_t pad_bottom, int64_t pad_left,
                          int64_t pad_right, int64_t threads,
                          int64_t layout) {
  return Run(kWeightGrad, Dims(x), Dims(*dw), Dims(dy), x.typed_data(),
             dy.typed_data(), dw->typed_data(), stride_h, stride_w, pad_top,
             pad_bottom, pad_left, pad_right, threads, layout);
}


// --- batch normalization (training: batch statistics) ----------------------
//
//   DistillCpuBatchNormForward(x, scale, shift, residual) -> (y, mean, var)
//   DistillCpuBatchNormBackward(x, dy, scale, mean, var, y)
//       -> (dx, dscale, dshift, dz)
//
// x, y, dy, dx: f32[N, H, W, C]; scale, shift, mean, var: f32[C]. The
// statistics are over N, H, W; var is the biased variance; the normalised
// n = (x - mean) / sqrt(var + eps) * scale + shift, and
//   y = relu?(n + residual?)
// by attributes `relu` and `add` (0 or 1; residual: f32[N, H, W, C] when
// `add`, else a one-element placeholder). The backward pass gets y when
// `relu` (else a placeholder) and takes ReLU's gradient from it: g = dy *
// (y > 0) is the gradient of n + residual; dz = g, the residual's gradient,
// is written when `relu` and `add` (else dz is a placeholder: without ReLU
// the residual's gradient is dy itself).
//
// Not oneDNN's batch norm: these OpenMP loops over the NHWC rows (N*H*W rows
// of C channels) fuse the add and ReLU into the norm's own passes (forward:
// x read twice, for the statistics and for y; backward: x, dy and y read
// twice, dx and dz written once), and were faster than oneDNN 2.6's
// primitive without the fusion for every ResNet-20 shape. The library is
// compiled for the machine that runs it (-march=native), so the inner
// loops over C vectorise.

ffi::Error BnCheck(const std::vector<int64_t>& d, int64_t c) {
  if (d.size() != 4 || d[3] != c) {
    return ffi::Error::InvalidArgument(
        "batch norm: x must be NHWC with C features");
  }
  return ffi::Error::Success();
}

ffi::Error SameShape(const std::vector<int64_t>& d,
                     const std::vector<int64_t>& other, const char* what) {
  if (other != d) {
    return ffi::Error::InvalidArgument(
        std::string("batch norm: ") + what + " must have x's shape");
  }
  return ffi::Error::Success();
}

// Per-channel s1 = sum v and s2 = sum v * (b - centre) over the rows, with v
// = a, or a * (mask > 0) when kMask, and b = a when b is null: in double,
// from float partials of 64-row blocks.
template <bool kMask>
void ChannelSums(const float* a, const float* b, const float* mask,
                 const float* centre, int64_t rows, int64_t c, double* s1,
                 double* s2) {
  if (!b) b = a;
  const int threads = omp_get_max_threads();
  std::vector<double> part(2 * threads * c, 0.0);
  const int64_t blocks = (rows + 63) / 64;
#pragma omp parallel
  {
    double* p1 = &part[2 * omp_get_thread_num() * c];
    double* p2 = p1 + c;
    std::vector<float> f1(c), f2(c);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      std::fill(f1.begin(), f1.end(), 0.f);
      std::fill(f2.begin(), f2.end(), 0.f);
      float* __restrict__ g1 = f1.data();
      float* __restrict__ g2 = f2.data();
      const int64_t end = std::min(rows, (blk + 1) * 64);
      for (int64_t r = blk * 64; r < end; ++r) {
        const float* __restrict__ ar = a + r * c;
        const float* __restrict__ br = b + r * c;
        const float* __restrict__ mr = kMask ? mask + r * c : nullptr;
        for (int64_t k = 0; k < c; ++k) {
          // Both operands loaded unconditionally, so the select vectorises.
          const float av = ar[k];
          const float v = kMask ? (mr[k] > 0.f ? av : 0.f) : av;
          g1[k] += v;
          g2[k] += v * (br[k] - centre[k]);
        }
      }
      for (int64_t k = 0; k < c; ++k) {
        p1[k] += g1[k];
        p2[k] += g2[k];
      }
    }
  }
  for (int64_t k = 0; k < c; ++k) {
    s1[k] = s2[k] = 0.0;
    for (int t = 0; t < threads; ++t) {
      s1[k] += part[2 * t * c + k];
      s2[k] += part[(2 * t + 1) * c + k];
    }
  }
}

// y = relu?(x * a + b + residual?)
template <bool kResidual, bool kRelu>
void Normalize(const float* x, const float* a, const float* b,
               const float* residual, int64_t rows, int64_t c, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict__ xr = x + r * c;
    const float* __restrict__ rr = kResidual ? residual + r * c : nullptr;
    float* __restrict__ yr = y + r * c;
    for (int64_t k = 0; k < c; ++k) {
      float v = xr[k] * a[k] + b[k];
      if (kResidual) v += rr[k];
      yr[k] = kRelu ? std::max(v, 0.f) : v;
    }
  }
}

// dx = k1 * g + k2 * x + k3 with g = dy, or dy * (y > 0) when kRelu; and
// dz = g when kDz.
template <bool kRelu, bool kDz>
void NormalizeGrad(const float* x, const float* dy, const float* y,
                   const float* k1, const float* k2, const float* k3,
                   int64_t rows, int64_t c, float* dx, float* dz) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict__ xr = x + r * c;
    const float* __restrict__ dyr = dy + r * c;
    const float* __restrict__ yr = kRelu ? y + r * c : nullptr;
    float* __restrict__ dxr = dx + r * c;
    float* __restrict__ dzr = kDz ? dz + r * c : nullptr;
    for (int64_t k = 0; k < c; ++k) {
      const float d = dyr[k];
      const float g = kRelu ? (yr[k] > 0.f ? d : 0.f) : d;
      dxr[k] = k1[k] * g + k2[k] * xr[k] + k3[k];
      if (kDz) dzr[k] = g;
    }
  }
}

void LoopsForward(const float* x, const float* scale, const float* shift,
                  const float* residual, bool relu, int64_t rows, int64_t c,
                  float epsilon, float* y, float* mean, float* var) {
  std::vector<double> s1(c), s2(c);
  std::vector<float> zero(c, 0.f), a(c), b(c);
  // One pass for sum x and sum x^2, accumulated in double (flax's
  // use_fast_variance computes the same E[x^2] - E[x]^2 in float).
  ChannelSums<false>(x, nullptr, nullptr, zero.data(), rows, c, s1.data(),
                     s2.data());
  for (int64_t k = 0; k < c; ++k) {
    const double m = s1[k] / rows;
    mean[k] = static_cast<float>(m);
    var[k] = static_cast<float>(std::max(0.0, s2[k] / rows - m * m));
    const float rstd = 1.f / std::sqrt(var[k] + epsilon);
    a[k] = scale[k] * rstd;
    b[k] = shift[k] - mean[k] * a[k];
  }
  const float *pa = a.data(), *pb = b.data();
  if (residual && relu) {
    Normalize<true, true>(x, pa, pb, residual, rows, c, y);
  } else if (residual) {
    Normalize<true, false>(x, pa, pb, residual, rows, c, y);
  } else if (relu) {
    Normalize<false, true>(x, pa, pb, residual, rows, c, y);
  } else {
    Normalize<false, false>(x, pa, pb, residual, rows, c, y);
  }
}

// The gradients of LoopsForward's y (dy) in x, scale, shift, and in the
// residual (dz) when `dz` is not null; `y` is read for ReLU's gradient when
// not null.
void LoopsBackward(const float* x, const float* dy, const float* y,
                   const float* scale, const float* mean, const float* var,
                   int64_t rows, int64_t c, float epsilon, float* dx,
                   float* dscale, float* dshift, float* dz) {
  std::vector<double> s1(c), s2(c);
  std::vector<float> k1(c), k2(c), k3(c);
  if (y) {
    ChannelSums<true>(dy, x, y, mean, rows, c, s1.data(), s2.data());
  } else {
    ChannelSums<false>(dy, x, nullptr, mean, rows, c, s1.data(), s2.data());
  }
  for (int64_t k = 0; k < c; ++k) {
    const float rstd = 1.f / std::sqrt(var[k] + epsilon);
    dshift[k] = static_cast<float>(s1[k]);
    dscale[k] = static_cast<float>(s2[k] * rstd);
    k1[k] = scale[k] * rstd;
    k2[k] = static_cast<float>(-k1[k] * rstd * rstd * s2[k] / rows);
    k3[k] = static_cast<float>(-k1[k] * s1[k] / rows) - k2[k] * mean[k];
  }
  const float *p1 = k1.data(), *p2 = k2.data(), *p3 = k3.data();
  if (y && dz) {
    NormalizeGrad<true, true>(x, dy, y, p1, p2, p3, rows, c, dx, dz);
  } else if (y) {
    NormalizeGrad<true, false>(x, dy, y, p1, p2, p3, rows, c, dx, dz);
  } else {
    NormalizeGrad<false, false>(x, dy, y, p1, p2, p3, rows, c, dx, dz);
  }
}

ffi::Error BnForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                         ffi::Buffer<ffi::F32> shift,
                         ffi::Buffer<ffi::F32> residual,
                         ffi::ResultBuffer<ffi::F32> y,
                         ffi::ResultBuffer<ffi::F32> mean,
                         ffi::ResultBuffer<ffi::F32> var, float epsilon,
                         int64_t threads, int64_t relu, int64_t add) {
  const auto d = Dims(x);
  if (auto e = BnCheck(d, scale.element_count()); e.failure()) return e;
  if (add) {
    if (auto e = SameShape(d, Dims(residual), "residual"); e.failure()) {
      return e;
    }
  }
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  LoopsForward(x.typed_data(), scale.typed_data(), shift.typed_data(),
               add ? residual.typed_data() : nullptr, relu != 0,
               d[0] * d[1] * d[2], d[3], epsilon, y->typed_data(),
               mean->typed_data(), var->typed_data());
  return ffi::Error::Success();
}

ffi::Error BnBackwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::Buffer<ffi::F32> scale,
                          ffi::Buffer<ffi::F32> mean,
                          ffi::Buffer<ffi::F32> var,
                          ffi::Buffer<ffi::F32> y,
                          ffi::ResultBuffer<ffi::F32> dx,
                          ffi::ResultBuffer<ffi::F32> dscale,
                          ffi::ResultBuffer<ffi::F32> dshift,
                          ffi::ResultBuffer<ffi::F32> dz, float epsilon,
                          int64_t threads, int64_t relu, int64_t add) {
  const auto d = Dims(x);
  if (auto e = BnCheck(d, scale.element_count()); e.failure()) return e;
  if (relu) {
    if (auto e = SameShape(d, Dims(y), "y"); e.failure()) return e;
  }
  if (relu && add) {
    if (auto e = SameShape(d, Dims(*dz), "dz"); e.failure()) return e;
  }
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  LoopsBackward(x.typed_data(), dy.typed_data(),
                relu ? y.typed_data() : nullptr, scale.typed_data(),
                mean.typed_data(), var.typed_data(), d[0] * d[1] * d[2],
                d[3], epsilon, dx->typed_data(), dscale->typed_data(),
                dshift->typed_data(), relu && add ? dz->typed_data() : nullptr);
  return ffi::Error::Success();
}

// --- max pooling over non-overlapping windows -----------------------------
//
//   DistillCpuMaxPoolForward(x) -> (y, arg)
//   DistillCpuMaxPoolBackward(dy, arg) -> dx
//
// x, dx: f32[N, H, W, C]; y, dy: f32[N, H / wh, W / ww, C]; arg: f32 of y's
// shape (float, so the loops over C vectorise at one width), the position (row-major within the wh x ww window) of the first
// maximum; windows of attributes `wh`, `ww` tile the input exactly (stride =
// window, VALID). The backward pass writes dy to that position and zero to
// the window's others (XLA's reshape-max gradient shares ties instead; after
// a ReLU only zeros tie, whose gradient the ReLU stops either way).

ffi::Error PoolCheck(const std::vector<int64_t>& x,
                     const std::vector<int64_t>& y, int64_t wh, int64_t ww) {
  if (x.size() != 4 || y.size() != 4 || wh < 1 || ww < 1 ||
      x[0] != y[0] || x[3] != y[3] || x[1] != y[1] * wh ||
      x[2] != y[2] * ww) {
    return ffi::Error::InvalidArgument(
        "max pool: x must be NHWC tiled exactly by the windows of y");
  }
  return ffi::Error::Success();
}

ffi::Error PoolForwardImpl(ffi::Buffer<ffi::F32> x,
                           ffi::ResultBuffer<ffi::F32> y,
                           ffi::ResultBuffer<ffi::F32> arg, int64_t wh,
                           int64_t ww, int64_t threads) {
  const auto xd = Dims(x), yd = Dims(*y);
  if (auto e = PoolCheck(xd, yd, wh, ww); e.failure()) return e;
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  const int64_t n = yd[0], ho = yd[1], wo = yd[2], c = yd[3], w = xd[2];
  const float* xp = x.typed_data();
  float* yp = y->typed_data();
  float* ap = arg->typed_data();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n * ho; ++row) {
    const int64_t b = row / ho, i = row % ho;
    for (int64_t j = 0; j < wo; ++j) {
      float* __restrict__ yr = yp + ((row * wo) + j) * c;
      float* __restrict__ ar = ap + ((row * wo) + j) * c;
      const float* __restrict__ x0 = xp + ((b * xd[1] + i * wh) * w +
                                           j * ww) * c;
      for (int64_t k = 0; k < c; ++k) {
        yr[k] = x0[k];
        ar[k] = 0.f;
      }
      for (int64_t p = 1; p < wh * ww; ++p) {
        const int64_t xi = i * wh + p / ww, xj = j * ww + p % ww;
        const float* __restrict__ xr = xp + ((b * xd[1] + xi) * w + xj) * c;
        const float fp = static_cast<float>(p);
        for (int64_t k = 0; k < c; ++k) {
          const float v = xr[k], m = yr[k], a = ar[k];
          const bool more = v > m;
          yr[k] = more ? v : m;
          ar[k] = more ? fp : a;
        }
      }
    }
  }
  return ffi::Error::Success();
}

ffi::Error PoolBackwardImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> arg,
                            ffi::ResultBuffer<ffi::F32> dx, int64_t wh,
                            int64_t ww, int64_t threads) {
  const auto xd = Dims(*dx), yd = Dims(dy);
  if (auto e = PoolCheck(xd, yd, wh, ww); e.failure()) return e;
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  const int64_t n = yd[0], ho = yd[1], wo = yd[2], c = yd[3], w = xd[2];
  const float* gp = dy.typed_data();
  const float* ap = arg.typed_data();
  float* xp = dx->typed_data();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n * ho; ++row) {
    const int64_t b = row / ho, i = row % ho;
    for (int64_t j = 0; j < wo; ++j) {
      const float* __restrict__ gr = gp + ((row * wo) + j) * c;
      const float* __restrict__ ar = ap + ((row * wo) + j) * c;
      for (int64_t p = 0; p < wh * ww; ++p) {
        const int64_t xi = i * wh + p / ww, xj = j * ww + p % ww;
        float* __restrict__ xr = xp + ((b * xd[1] + xi) * w + xj) * c;
        const float fp = static_cast<float>(p);
        for (int64_t k = 0; k < c; ++k) {
          const float g = gr[k];
          xr[k] = ar[k] == fp ? g : 0.f;
        }
      }
    }
  }
  return ffi::Error::Success();
}

}  // namespace

#define DISTILL_CONV_BINDING                 \
  ffi::Ffi::Bind()                           \
      .Arg<ffi::Buffer<ffi::F32>>()          \
      .Arg<ffi::Buffer<ffi::F32>>()          \
      .Ret<ffi::Buffer<ffi::F32>>()          \
      .Attr<int64_t>("stride_h")             \
      .Attr<int64_t>("stride_w")             \
      .Attr<int64_t>("pad_top")              \
      .Attr<int64_t>("pad_bottom")           \
      .Attr<int64_t>("pad_left")             \
      .Attr<int64_t>("pad_right")            \
      .Attr<int64_t>("threads")              \
      .Attr<int64_t>("layout")

XLA_FFI_DEFINE_HANDLER_SYMBOL(DistillOnednnConvForward, ForwardImpl,
                              DISTILL_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(DistillOnednnConvInputGrad, InputGradImpl,
                              DISTILL_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(DistillOnednnConvWeightGrad, WeightGradImpl,
                              DISTILL_CONV_BINDING);

XLA_FFI_DEFINE_HANDLER_SYMBOL(DistillCpuBatchNormForward, BnForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("relu")
                                  .Attr<int64_t>("add"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(DistillCpuBatchNormBackward, BnBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("relu")
                                  .Attr<int64_t>("add"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DistillCpuMaxPoolForward, PoolForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("wh")
                                  .Attr<int64_t>("ww")
                                  .Attr<int64_t>("threads"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(DistillCpuMaxPoolBackward, PoolBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("wh")
                                  .Attr<int64_t>("ww")
                                  .Attr<int64_t>("threads"));
