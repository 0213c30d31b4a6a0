"""`python -m fastlayers info`: what is installed and what it can run."""

import platform

import torch

import fastlayers

# The ops of the fastlayers library, as (user-facing name, dispatcher op names).
OPS = {
    "conv2d": ("conv2d", "conv2d_backward"),
    "max_pool2d": ("max_pool2d_forward", "max_pool2d", "max_pool2d_backward"),
    "scaled_dot_product_attention": ("attention_forward", "attention_backward", "attention_probs"),
    "softmax": ("softmax_forward", "softmax_backward"),
    "positional_encoding": ("positional_encoding",),
    "int8_mm, int8_linear, quantize_per_row": ("int8_mm", "int8_linear", "quantize_per_row"),
    "rnn_recurrence (nn.RNN, nn.RNNCell)": ("rnn_recurrence", "rnn_recurrence_backward"),
}


def op_devices(op_names) -> list:
    devices = []
    for key, name in (("CPU", "cpu"), ("CUDA", "cuda")):
        if all(torch._C._dispatch_has_kernel_for_dispatch_key(f"fastlayers::{n}", key) for n in op_names):
            devices.append(name)
    return devices


def collect() -> dict:
    info = fastlayers.build_info()
    return {
        "fastlayers": info["version"],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch built for": info["torch_version"],
        "CUDA (torch)": torch.version.cuda or "none",
        "CUDA kernels": "yes" if info["with_cuda"] else "no (CPU-only build)",
        "CUDA archs compiled": info["cuda_archs"] or "none",
        "GPU": torch.cuda.get_device_name() if torch.cuda.is_available() else "none available",
        "CPU ISA variants compiled": info["cpu_isa_compiled"],
        "CPU ISA in use": info["cpu_isa"],
        "int8 GEMM on CPU": info["int8_gemm_cpu_path"],
        "CPU threads (torch)": str(torch.get_num_threads()),
        "ops": {name: op_devices(ops) for name, ops in OPS.items()},
    }


def run() -> int:
    info = collect()
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "ops":
            continue
        print(f"{key:<{width}}  {value}")
    print("ops:")
    for name, devices in info["ops"].items():
        print(f"  {name:<{width - 2}}  {', '.join(devices) or 'none'}")
    return 0
