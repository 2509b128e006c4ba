"""Decode kernels for the local backend (speculative decoding, sparse activation).

Empty for now: the first local backend decodes densely. Kernels land here with
torch reference versions first and Triton versions for GPUs.
"""
