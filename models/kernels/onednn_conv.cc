// A 2-D convolution by oneDNN: forward, input gradient and weight gradient,
// as XLA FFI handlers for the CPU backend (models/kernels/onednn.py builds
// and registers them).
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
// Attribute `layout`: 0 runs oneDNN's kernels on the NHWC buffers as they
// are (weights reordered into the kernel's blocked layout); 1 lets oneDNN
// choose every layout (blocked activations: reorders in and out of each
// call). Primitives, their blocked buffers and reorders are created once
// per shape, layout and thread, and reused.
#include <omp.h>

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

struct BnPlan {
  dnnl::primitive primitive;
};

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<Key, std::unique_ptr<Plan>> plans;
  std::map<std::tuple<bool, std::vector<int64_t>, float>,
           std::unique_ptr<BnPlan>> bn_plans;
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
                                                    tag act) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::convolution_forward::primitive_desc(
      ctx.engine, dnnl::prop_kind::forward_training,
      dnnl::algorithm::convolution_direct, Desc(g.src, act),
      Desc(g.wei, tag::any), Desc(g.dst, act), g.strides, g.pad_l, g.pad_r);
#else
  return dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(
          dnnl::prop_kind::forward_training,
          dnnl::algorithm::convolution_direct, Desc(g.src, act),
          Desc(g.wei, tag::any), Desc(g.dst, act), g.strides, g.pad_l,
          g.pad_r),
      ctx.engine);
#endif
}

// The primitive descriptor of gradient primitive P (the input's or the
// weights'; their descriptors take the same arguments), hinted by `fwd`.
template <typename P>
typename P::primitive_desc GradPd(
    Context& ctx, const Geometry& g, tag act,
    const dnnl::convolution_forward::primitive_desc& fwd) {
#if DNNL_VERSION_MAJOR >= 3
  return typename P::primitive_desc(
      ctx.engine, dnnl::algorithm::convolution_direct, Desc(g.src, act),
      Desc(g.wei, tag::any), Desc(g.dst, act), g.strides, g.pad_l, g.pad_r,
      fwd);
#else
  return typename P::primitive_desc(
      typename P::desc(dnnl::algorithm::convolution_direct, Desc(g.src, act),
                       Desc(g.wei, tag::any), Desc(g.dst, act), g.strides,
                       g.pad_l, g.pad_r),
      ctx.engine, fwd);
#endif
}

std::unique_ptr<Plan> MakePlanFor(Context& ctx, Kind kind, const Geometry& g,
                                  tag act) {
  const auto user_src = Desc(g.src, tag::nhwc);
  const auto user_dst = Desc(g.dst, tag::nhwc);
  const auto user_wei = Desc(g.wei, tag::hwio);
  auto fwd = ForwardPd(ctx, g, act);
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
    auto pd = GradPd<dnnl::convolution_backward_data>(ctx, g, act, fwd);
    plan->impl = pd.impl_info_str();
    plan->primitive = dnnl::convolution_backward_data(pd);
    plan->in_args = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS};
    plan->ins = {MakeOperand(ctx, user_dst, pd.diff_dst_desc(), true),
                 MakeOperand(ctx, user_wei, pd.weights_desc(), true)};
    plan->out_arg = DNNL_ARG_DIFF_SRC;
    plan->out = MakeOperand(ctx, user_src, pd.diff_src_desc(), false);
  } else {
    auto pd = GradPd<dnnl::convolution_backward_weights>(ctx, g, act, fwd);
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
std::unique_ptr<Plan> MakePlan(Context& ctx, Kind kind, const Geometry& g,
                               int64_t layout) {
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
//   DistillOnednnBatchNormForward(x, scale, shift) -> (y, mean, var)
//   DistillOnednnBatchNormBackward(x, dy, scale, mean, var)
//       -> (dx, dscale, dshift)
//
// x, y, dy, dx: f32[N, H, W, C]; the rest f32[C]. The statistics are over
// N, H, W; var is the biased variance; y = (x - mean) / sqrt(var + eps) *
// scale + shift.

dnnl::batch_normalization_forward::primitive_desc BnForwardPd(
    Context& ctx, const dnnl::memory::desc& data, float epsilon) {
  const auto flags = dnnl::normalization_flags::use_scale |
                     dnnl::normalization_flags::use_shift;
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::batch_normalization_forward::primitive_desc(
      ctx.engine, dnnl::prop_kind::forward_training, data, data, epsilon,
      flags);
#else
  return dnnl::batch_normalization_forward::primitive_desc(
      dnnl::batch_normalization_forward::desc(
          dnnl::prop_kind::forward_training, data, epsilon, flags),
      ctx.engine);
#endif
}

BnPlan& GetBnPlan(Context& ctx, bool backward, const std::vector<int64_t>& d,
                  float epsilon) {
  auto key = std::make_tuple(backward, d, epsilon);
  auto found = ctx.bn_plans.find(key);
  if (found != ctx.bn_plans.end()) return *found->second;
  const auto data = Desc({d[0], d[3], d[1], d[2]}, tag::nhwc);
  auto fwd = BnForwardPd(ctx, data, epsilon);
  auto plan = std::make_unique<BnPlan>();
  if (!backward) {
    plan->primitive = dnnl::batch_normalization_forward(fwd);
  } else {
    const auto flags = dnnl::normalization_flags::use_scale |
                       dnnl::normalization_flags::use_shift;
#if DNNL_VERSION_MAJOR >= 3
    auto pd = dnnl::batch_normalization_backward::primitive_desc(
        ctx.engine, dnnl::prop_kind::backward, data, data, data, epsilon,
        flags, fwd);
#else
    auto pd = dnnl::batch_normalization_backward::primitive_desc(
        dnnl::batch_normalization_backward::desc(
            dnnl::prop_kind::backward, data, data, epsilon, flags),
        ctx.engine, fwd);
#endif
    plan->primitive = dnnl::batch_normalization_backward(pd);
  }
  return *ctx.bn_plans.emplace(key, std::move(plan)).first->second;
}

ffi::Error BnCheck(const std::vector<int64_t>& d, int64_t c) {
  if (d.size() != 4 || d[3] != c) {
    return ffi::Error::InvalidArgument(
        "onednn batch norm: x must be NHWC with C features");
  }
  return ffi::Error::Success();
}

// Runs the batch norm (`backward` or forward) of x: f32[d] on `operands`:
// (oneDNN argument, whether it is a per-channel vector, its buffer).
ffi::Error RunBn(bool backward, const std::vector<int64_t>& d, int64_t c,
                 float epsilon, int64_t threads,
                 std::initializer_list<std::tuple<int, bool, void*>> operands) {
  if (auto e = BnCheck(d, c); e.failure()) return e;
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  try {
    Context& ctx = ThreadContext();
    BnPlan& plan = GetBnPlan(ctx, backward, d, epsilon);
    const auto data = Desc({d[0], d[3], d[1], d[2]}, tag::nhwc);
    const auto vec = Desc({c}, tag::x);
    std::unordered_map<int, dnnl::memory> args;
    for (const auto& [arg, is_vec, buffer] : operands) {
      args.emplace(arg, dnnl::memory(is_vec ? vec : data, ctx.engine, buffer));
    }
    plan.primitive.execute(ctx.stream, args);
    ctx.stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error BnForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                         ffi::Buffer<ffi::F32> shift,
                         ffi::ResultBuffer<ffi::F32> y,
                         ffi::ResultBuffer<ffi::F32> mean,
                         ffi::ResultBuffer<ffi::F32> var, float epsilon,
                         int64_t threads) {
  return RunBn(false, Dims(x), scale.element_count(), epsilon, threads,
               {{DNNL_ARG_SRC, false, x.typed_data()},
                {DNNL_ARG_SCALE, true, scale.typed_data()},
                {DNNL_ARG_SHIFT, true, shift.typed_data()},
                {DNNL_ARG_DST, false, y->typed_data()},
                {DNNL_ARG_MEAN, true, mean->typed_data()},
                {DNNL_ARG_VARIANCE, true, var->typed_data()}});
}

ffi::Error BnBackwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::Buffer<ffi::F32> scale,
                          ffi::Buffer<ffi::F32> mean,
                          ffi::Buffer<ffi::F32> var,
                          ffi::ResultBuffer<ffi::F32> dx,
                          ffi::ResultBuffer<ffi::F32> dscale,
                          ffi::ResultBuffer<ffi::F32> dshift, float epsilon,
                          int64_t threads) {
  return RunBn(true, Dims(x), scale.element_count(), epsilon, threads,
               {{DNNL_ARG_SRC, false, x.typed_data()},
                {DNNL_ARG_DIFF_DST, false, dy.typed_data()},
                {DNNL_ARG_SCALE, true, scale.typed_data()},
                // oneDNN 2.x asks for the shift too, and does not read it:
                // the gradients do not depend on it.
                {DNNL_ARG_SHIFT, true, scale.typed_data()},
                {DNNL_ARG_MEAN, true, mean.typed_data()},
                {DNNL_ARG_VARIANCE, true, var.typed_data()},
                {DNNL_ARG_DIFF_SRC, false, dx->typed_data()},
                {DNNL_ARG_DIFF_SCALE, true, dscale->typed_data()},
                {DNNL_ARG_DIFF_SHIFT, true, dshift->typed_data()}});
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(DistillOnednnBatchNormForward, BnForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("threads"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(DistillOnednnBatchNormBackward, BnBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("threads"));
