"""Helpers of plugins/gpu_check.py (tier 2: kernels vs numpy references, bandwidth figures).
Depends only on numpy, ctypes, nvcc and libcudart: no torch/cupy needed on the GPU machine."""
