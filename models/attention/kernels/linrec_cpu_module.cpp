// The fused LinRec kernel as an installed extension (models.attention.kernels._linrec_cpu), compiled by setup.py
// when the package is installed next to torch (pip install --no-build-isolation .). The same source as the
// first-use build; LINREC_SOURCE_DIGEST lets the loader refuse an installed build older than the source.
#include "linrec_cpu.cpp"

#ifndef LINREC_SOURCE_DIGEST
#define LINREC_SOURCE_DIGEST "unknown"
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "LinRec (paper form) forward, (B, N, H, d) tensors");
  m.def("backward", &backward, "LinRec (paper form) backward into dq, dk, dv");
  m.attr("source_digest") = LINREC_SOURCE_DIGEST;
}
