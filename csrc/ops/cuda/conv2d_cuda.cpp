// conv2d CUDA glue: a device guard, the shared checks and allocation (conv2d_common.h), then
// the kernels on the current stream, checked. The implicit-GEMM kernels work on NHWC: an
// NCHW input (or gradient) is transposed to channels_last around them, here, by ATen's copy
// kernels; the direct kernels read either layout. The transposed weights the tensor-core
// kernels take are made here too (weights are small next to activations).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "fastlayers/conv2d.h"
#include "ops/common.h"
#include "ops/conv2d_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCudaTypes = {at::kFloat, at::kDouble, at::kHalf,
                                                              at::kBFloat16};

// A view of a kernel buffer [N, C, H, W] in the shape's layout.
at::Tensor view4(const void* p, int64_t n, int64_t c, int64_t h, int64_t w, bool cl,
                 const at::TensorOptions& opts) {
  auto t = at::from_blob(
      const_cast<void*>(p), {n, c, h, w},
      cl ? at::IntArrayRef{h * w * c, 1, w * c, c} : at::IntArrayRef{c * h * w, h * w, w, 1}, opts);
  return t;
}

at::Tensor weight_view(const Conv2dShape& s, const void* w, const at::TensorOptions& opts) {
  return at::from_blob(const_cast<void*>(w), {s.K, s.C / s.groups, s.R, s.S}, opts);
}

at::Tensor nhwc(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }

at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::CUDAGuard guard(input.device());
  const auto opts = input.options();
  return conv2d_forward_impl(
      input, weight, bias, stride, padding, dilation, groups, kCudaTypes, "cuda",
      [&](const Conv2dFwdParams& p) {
        const Conv2dShape& s = p.s;
        const auto plan = cuda::conv2d_plan(s);
        at::Tensor w_t;  // [K, R, S, C']
        if (plan.weight_transform)
          w_t = weight_view(s, p.w, opts).permute({0, 2, 3, 1}).contiguous();
        auto run = [&](const Conv2dFwdParams& q) {
          cuda::conv2d_forward(q, w_t.defined() ? w_t.data_ptr() : nullptr,
                               c10::cuda::getCurrentCUDAStream());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        };
        if (plan.direct || s.channels_last) return run(p);
        Conv2dFwdParams q = p;
        q.s.channels_last = true;
        const at::Tensor x = nhwc(view4(p.x, s.N, s.C, s.H, s.W, false, opts));
        at::Tensor y =
            at::empty({s.N, s.K, s.P, s.Q}, opts.memory_format(at::MemoryFormat::ChannelsLast));
        q.x = x.data_ptr();
        q.y = y.data_ptr();
        run(q);
        view4(p.y, s.N, s.K, s.P, s.Q, false, opts).copy_(y);
      });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  const c10::cuda::CUDAGuard guard(input.device());
  const auto opts = input.options();
  return conv2d_backward_impl(
      grad_output, input, weight, stride, padding, dilation, groups, output_mask, kCudaTypes,
      "cuda", [&](const Conv2dBwdParams& p) {
        const Conv2dShape& s = p.s;
        const auto plan = cuda::conv2d_plan(s);
        at::Tensor w_t;  // [groups, C', R, S, K']
        if (plan.weight_transform && p.gx != nullptr)
          w_t = weight_view(s, p.w, opts)
                    .view({s.groups, s.K / s.groups, s.C / s.groups, s.R, s.S})
                    .permute({0, 2, 3, 4, 1})
                    .contiguous();
        const at::Tensor ws =
            p.gw != nullptr && plan.wgrad_workspace_bytes > 0
                ? at::empty({int64_t(plan.wgrad_workspace_bytes)}, opts.dtype(at::kByte))
                : at::Tensor();
        auto run = [&](const Conv2dBwdParams& q) {
          cuda::conv2d_backward(q, w_t.defined() ? w_t.data_ptr() : nullptr,
                                ws.defined() ? ws.data_ptr() : nullptr,
                                c10::cuda::getCurrentCUDAStream());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        };
        if (plan.direct || s.channels_last) return run(p);
        Conv2dBwdParams q = p;
        q.s.channels_last = true;
        const at::Tensor gy = nhwc(view4(p.gy, s.N, s.K, s.P, s.Q, false, opts));
        const at::Tensor x = nhwc(view4(p.x, s.N, s.C, s.H, s.W, false, opts));
        at::Tensor gx;
        q.gy = gy.data_ptr();
        q.x = x.data_ptr();
        if (p.gx != nullptr) {
          gx = at::empty({s.N, s.C, s.H, s.W}, opts.memory_format(at::MemoryFormat::ChannelsLast));
          q.gx = gx.data_ptr();
        }
        run(q);
        if (p.gx != nullptr) view4(p.gx, s.N, s.C, s.H, s.W, false, opts).copy_(gx);
      });
}

}  // namespace

FL_CUDA_LIBRARY_IMPL(m) {
  m.impl("conv2d", &forward_cuda);
  m.impl("conv2d_backward", &backward_cuda);
}

}  // namespace ops
}  // namespace fl
