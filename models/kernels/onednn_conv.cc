// The weight gradient of a 2-D convolution by oneDNN, as an XLA FFI
// handler for the CPU backend (models/kernels/onednn.py builds and
// registers it).
//
// XLA:CPU computes this gradient at a fraction of the speed of the forward
// convolution and transposes its operands first (experiments/bench.py,
// breakdown and profile sections); oneDNN's blocked-layout kernel is what
// PyTorch uses for the same operation on CPU.
//
//   x:  f32[N, H, W, C]        (NHWC, row-major)
//   dy: f32[N, Ho, Wo, O]
//   dw: f32[KH, KW, C, O]      (HWIO, flax's kernel layout)
//
// Primitives, their blocked scratch buffers and reorders are created once
// per shape and thread, and reused.
#include <omp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Key = std::tuple<std::vector<int64_t>, std::vector<int64_t>, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t>;

struct Plan {
  dnnl::convolution_backward_weights wgrad;
  dnnl::memory::desc user_x, user_dy, user_dw;
  dnnl::memory x, dy, dw;               // in the kernel's layouts
  bool reorder_x, reorder_dy, reorder_dw;
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

std::unique_ptr<Plan> MakePlan(Context& ctx, const std::vector<int64_t>& xd,
                               const std::vector<int64_t>& dyd, int64_t kh,
                               int64_t kw, int64_t sh, int64_t sw,
                               int64_t pt, int64_t pb, int64_t pl,
                               int64_t pr) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const int64_t n = xd[0], h = xd[1], w = xd[2], c = xd[3];
  const int64_t ho = dyd[1], wo = dyd[2], o = dyd[3];
  dnnl::memory::dims src{n, c, h, w}, dst{n, o, ho, wo}, wei{o, c, kh, kw};
  dnnl::memory::dims strides{sh, sw}, pad_l{pt, pl}, pad_r{pb, pr};
  auto any = [](const dnnl::memory::dims& d) {
    return dnnl::memory::desc(d, dt::f32, tag::any);
  };
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(
          dnnl::prop_kind::forward_training,
          dnnl::algorithm::convolution_direct, any(src), any(wei), any(dst),
          strides, pad_l, pad_r),
      ctx.engine);
  auto pd = dnnl::convolution_backward_weights::primitive_desc(
      dnnl::convolution_backward_weights::desc(
          dnnl::algorithm::convolution_direct, any(src), any(wei), any(dst),
          strides, pad_l, pad_r),
      ctx.engine, fwd_pd);
  auto plan = std::make_unique<Plan>();
  plan->wgrad = dnnl::convolution_backward_weights(pd);
  plan->user_x = dnnl::memory::desc(src, dt::f32, tag::nhwc);
  plan->user_dy = dnnl::memory::desc(dst, dt::f32, tag::nhwc);
  plan->user_dw = dnnl::memory::desc(wei, dt::f32, tag::hwio);
  plan->reorder_x = pd.src_desc() != plan->user_x;
  plan->reorder_dy = pd.diff_dst_desc() != plan->user_dy;
  plan->reorder_dw = pd.diff_weights_desc() != plan->user_dw;
  // Blocked buffers are owned by the plan; user layouts are wrapped per call.
  plan->x = plan->reorder_x ? dnnl::memory(pd.src_desc(), ctx.engine)
                            : dnnl::memory(plan->user_x, ctx.engine, nullptr);
  plan->dy = plan->reorder_dy
                 ? dnnl::memory(pd.diff_dst_desc(), ctx.engine)
                 : dnnl::memory(plan->user_dy, ctx.engine, nullptr);
  plan->dw = plan->reorder_dw
                 ? dnnl::memory(pd.diff_weights_desc(), ctx.engine)
                 : dnnl::memory(plan->user_dw, ctx.engine, nullptr);
  return plan;
}

ffi::Error ConvWeightGradImpl(ffi::Buffer<ffi::F32> x,
                              ffi::Buffer<ffi::F32> dy,
                              ffi::ResultBuffer<ffi::F32> dw,
                              int64_t stride_h, int64_t stride_w,
                              int64_t pad_top, int64_t pad_bottom,
                              int64_t pad_left, int64_t pad_right,
                              int64_t threads) {
  auto xs = x.dimensions();
  auto dys = dy.dimensions();
  auto dws = dw->dimensions();
  if (xs.size() != 4 || dys.size() != 4 || dws.size() != 4) {
    return ffi::Error::InvalidArgument(
        "onednn conv weight gradient: operands must be NHWC and HWIO");
  }
  std::vector<int64_t> xd(xs.begin(), xs.end()), dyd(dys.begin(), dys.end());
  const int64_t kh = dws[0], kw = dws[1];
  if (dws[2] != xd[3] || dws[3] != dyd[3] || dyd[0] != xd[0]) {
    return ffi::Error::InvalidArgument(
        "onednn conv weight gradient: mismatched channel or batch sizes");
  }
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  try {
    Context& ctx = ThreadContext();
    Key key{xd, dyd, kh, kw, stride_h, stride_w, pad_top, pad_bottom,
            pad_left, pad_right};
    auto found = ctx.plans.find(key);
    if (found == ctx.plans.end()) {
      found = ctx.plans
                  .emplace(key, MakePlan(ctx, xd, dyd, kh, kw, stride_h,
                                         stride_w, pad_top, pad_bottom,
                                         pad_left, pad_right))
                  .first;
    }
    Plan& plan = *found->second;
    dnnl::memory ux(plan.user_x, ctx.engine, x.typed_data());
    dnnl::memory udy(plan.user_dy, ctx.engine, dy.typed_data());
    dnnl::memory udw(plan.user_dw, ctx.engine, dw->typed_data());
    dnnl::memory kx = ux, kdy = udy, kdw = udw;
    if (plan.reorder_x) {
      dnnl::reorder(ux, plan.x).execute(ctx.stream, ux, plan.x);
      kx = plan.x;
    }
    if (plan.reorder_dy) {
      dnnl::reorder(udy, plan.dy).execute(ctx.stream, udy, plan.dy);
      kdy = plan.dy;
    }
    if (plan.reorder_dw) kdw = plan.dw;
    plan.wgrad.execute(ctx.stream, {{DNNL_ARG_SRC, kx},
                                    {DNNL_ARG_DIFF_DST, kdy},
                                    {DNNL_ARG_DIFF_WEIGHTS, kdw}});
    if (plan.reorder_dw) {
      dnnl::reorder(plan.dw, udw).execute(ctx.stream, plan.dw, udw);
    }
    ctx.stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DistillOnednnConvWeightGrad, ConvWeightGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_bottom")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("pad_right")
                                  .Attr<int64_t>("threads"));
