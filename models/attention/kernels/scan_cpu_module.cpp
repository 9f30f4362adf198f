// The recurrent mixers' fused scans as an installed extension (models.attention.kernels._scan_cpu), compiled by
// setup.py next to torch. The same source as the first-use build; SCAN_SOURCE_DIGEST lets the loader refuse an
// installed build older than the source.
#include "scan_cpu.cpp"

#ifndef SCAN_SOURCE_DIGEST
#define SCAN_SOURCE_DIGEST "unknown"
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lru_forward", &lru_forward, "LRU scan forward, real views (B, N, P, 2)");
  m.def("lru_backward", &lru_backward, "LRU scan backward: (du, dlam)");
  m.def("mamba_forward", &mamba_forward, "selective scan forward: (y, kept states)");
  m.def("mamba_backward", &mamba_backward, "selective scan backward: (d_dx, d_delta, d_a, d_b, d_c)");
  m.def("efficient_forward", &efficient_forward, "causal Efficient Attention forward: (out, logz)");
  m.def("efficient_backward", &efficient_backward, "causal Efficient Attention backward: (da, dk, dv)");
  m.def("linear_forward", &linear_forward, "causal linear attention forward: (out, den)");
  m.def("linear_backward", &linear_backward, "causal linear attention backward: (d q, d k, d v)");
  m.def("performer_forward", &performer_forward, "causal Performer forward: (out, den, fq, fk)");
  m.def("performer_backward", &performer_backward, "causal Performer backward: (d q, d k, d v)");
  m.def("retention_forward", &retention_forward, "causal retention forward: out");
  m.def("retention_backward", &retention_backward, "causal retention backward: (d q, d k, d v)");
  m.attr("source_digest") = SCAN_SOURCE_DIGEST;
}
