// The quantized decode step of the local engine on a CPU, as one call (fused_decode.py says why).
//
// The weight products and attention call the same torch kernels as the Python step
// (llama_runner.py's decode_over and quantized_linear.py's QuantizedWeight.product), so they
// give the same values. What runs here as plain loops is the small per-row arithmetic around
// them: the RMSNorms, the rotary embedding with the KV writes, SiLU times the up projection,
// and the residual adds. In Python those are a couple of hundred operator calls per layer,
// each costing more in dispatch than in arithmetic at batch 1.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

namespace {

// How one product's weight is held; the values of quantized_linear.QuantizedWeight.kind.
enum Kind : int64_t { kInt8 = 0, kInt4 = 1, kW8A8 = 2 };

class FusedDecode {
 public:
  // Per layer l: norms[2l] (input) and norms[2l+1] (post-attention); norms[2L] is the final norm.
  // Products 4l..4l+3 are the layer's qkv, o, gate_up and down; product 4L is the LM head.
  // For each product: its kind, its packed codes, its scales (int4: scales and zero points)
  // and, where wide products use one, its dequantized float weight (else an empty tensor).
  FusedDecode(std::vector<at::Tensor> norms, std::vector<int64_t> kinds, std::vector<at::Tensor> packed,
              std::vector<at::Tensor> scales, std::vector<at::Tensor> dense, int64_t heads, int64_t kv_heads,
              int64_t head_dim, int64_t intermediate, double eps, double scaling, int64_t int4_group,
              int64_t packed_rows)
      : norms_(std::move(norms)), kinds_(std::move(kinds)), packed_(std::move(packed)), scales_(std::move(scales)),
        dense_(std::move(dense)), heads_(heads), kv_heads_(kv_heads), head_dim_(head_dim),
        intermediate_(intermediate), eps_(static_cast<float>(eps)), scaling_(scaling), int4_group_(int4_group),
        packed_rows_(packed_rows), layers_(static_cast<int64_t>(norms_.size() - 1) / 2) {
    TORCH_CHECK(norms_.size() == static_cast<size_t>(2 * layers_ + 1), "norms: expected 2 per layer and a final one");
    TORCH_CHECK(kinds_.size() == static_cast<size_t>(4 * layers_ + 1) && packed_.size() == kinds_.size() &&
                    scales_.size() == kinds_.size() && dense_.size() == kinds_.size(),
                "products: expected 4 per layer and the LM head");
  }

  // Logits [B, vocab] for hidden [B, hidden] (the tokens' embeddings, overwritten) at `positions`
  // [B] (where each row's new KV goes), over the pool's `storage` [layers, 2, slots, kv_heads,
  // length, head_dim]; rows are slots 0..B-1. `cos` and `sin` are the rotary tables [positions, head_dim].
  at::Tensor step(at::Tensor hidden, const at::Tensor& positions, at::Tensor storage, const at::Tensor& cos,
                  const at::Tensor& sin) const {
    TORCH_CHECK(hidden.scalar_type() == at::kFloat && hidden.is_contiguous(), "hidden: contiguous float32 expected");
    TORCH_CHECK(storage.scalar_type() == at::kFloat, "the KV pool must be float32");
    TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.scalar_type() == at::kFloat, "rotary tables");
    const int64_t rows = hidden.size(0), width = hidden.size(1), d = head_dim_;
    const auto pos = positions.to(at::kLong).contiguous();
    const int64_t* at_pos = pos.data_ptr<int64_t>();
    const int64_t keys_width = *std::max_element(at_pos, at_pos + rows) + 1;
    TORCH_CHECK(keys_width <= storage.size(4) && rows <= storage.size(2), "the KV pool is too small for this step");
    TORCH_CHECK(keys_width <= cos.size(0), "the rotary tables are too short for this step");

    const auto opts = hidden.options();
    at::Tensor x = at::empty({rows, width}, opts);
    at::Tensor q = at::empty({rows, kv_heads_, heads_ / kv_heads_, d}, opts);
    at::Tensor act = at::empty({rows, intermediate_}, opts);
    std::optional<at::Tensor> mask;
    if (rows > 1) {  // each row sees the keys up to its own position
      mask = at::arange(keys_width, positions.options().dtype(at::kLong)).view({1, 1, 1, keys_width})
                 .le(pos.view({rows, 1, 1, 1}));
    }
    float* h = hidden.data_ptr<float>();
    for (int64_t layer = 0; layer < layers_; ++layer) {
      norm_rows(h, norms_[2 * layer], x.data_ptr<float>(), rows, width);
      const at::Tensor qkv = product(x, 4 * layer).contiguous();
      rotate_and_store(qkv.data_ptr<float>(), at_pos, q.data_ptr<float>(), storage, layer, rows, cos, sin);
      const at::Tensor keys = storage.select(0, layer).select(0, 0).narrow(0, 0, rows).narrow(2, 0, keys_width);
      const at::Tensor values = storage.select(0, layer).select(0, 1).narrow(0, 0, rows).narrow(2, 0, keys_width);
      const at::Tensor attended = at::scaled_dot_product_attention(q, keys, values, mask, 0.0, false, scaling_);
      add_rows(h, product(attended.reshape({rows, heads_ * d}), 4 * layer + 1), rows, width);
      norm_rows(h, norms_[2 * layer + 1], x.data_ptr<float>(), rows, width);
      silu_times_up(product(x, 4 * layer + 2).contiguous(), act.data_ptr<float>(), rows);
      add_rows(h, product(act, 4 * layer + 3), rows, width);
    }
    norm_rows(h, norms_[2 * layers_], x.data_ptr<float>(), rows, width);
    return product(x, 4 * layers_);
  }

 private:
  // x [rows, in] @ weight.T on the path QuantizedWeight.product takes for this width.
  at::Tensor product(const at::Tensor& x, int64_t index) const {
    const int64_t kind = kinds_[index];
    if (kind == kW8A8) return integer_product(x, index);
    if (x.size(0) > packed_rows_) return at::linear(x, dense_[index]);
    const at::Tensor narrow = x.to(at::kBFloat16);
    const at::Tensor out =
        kind == kInt8 ? at::_weight_int8pack_mm(narrow, packed_[index], scales_[index])
                      : at::_weight_int4pack_mm_for_cpu(narrow, packed_[index], int4_group_, scales_[index]);
    return out.to(at::kFloat);
  }

  // w8a8: each row of x to int8 on a scale of its own, an integer product, then both scales
  // (QuantizedWeight.integer_product's arithmetic, in its order).
  at::Tensor integer_product(const at::Tensor& x, int64_t index) const {
    const int64_t rows = x.size(0), in = x.size(1);
    const at::Tensor input = x.contiguous();
    const float* xs = input.data_ptr<float>();
    at::Tensor codes = at::empty({rows, in}, x.options().dtype(at::kChar));
    int8_t* cs = codes.data_ptr<int8_t>();
    std::vector<float> row_scale(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = xs + r * in;
      float largest = 0.f;
      for (int64_t j = 0; j < in; ++j) largest = std::max(largest, std::fabs(row[j]));
      const float scale = std::max(largest, 1e-12f) / 127.f;
      row_scale[r] = scale;
      for (int64_t j = 0; j < in; ++j) cs[r * in + j] = static_cast<int8_t>(std::nearbyint(row[j] / scale));
    }
    const at::Tensor sums = at::_int_mm(codes, packed_[index].t()).contiguous();
    const int64_t out = sums.size(1);
    at::Tensor result = at::empty({rows, out}, x.options());
    const int32_t* ss = sums.data_ptr<int32_t>();
    const float* ws = scales_[index].data_ptr<float>();
    float* ys = result.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < out; ++o) ys[r * out + o] = static_cast<float>(ss[r * out + o]) * ws[o] * row_scale[r];
    }
    return result;
  }

  // out = RMSNorm(h) row by row, with the norm's weight.
  void norm_rows(const float* h, const at::Tensor& weight, float* out, int64_t rows, int64_t width) const {
    const float* w = weight.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = h + r * width;
      double squares = 0.0;
      for (int64_t j = 0; j < width; ++j) squares += static_cast<double>(row[j]) * row[j];
      const float inverse = 1.f / std::sqrt(static_cast<float>(squares / width) + eps_);
      for (int64_t j = 0; j < width; ++j) out[r * width + j] = w[j] * (row[j] * inverse);
    }
  }

  // The rotary embedding of q and k (HF's x * cos + rotate_half(x) * sin); q into `q`, and the
  // new key and value into each row's slot of the pool at its position.
  void rotate_and_store(const float* qkv, const int64_t* pos, float* q, at::Tensor& storage, int64_t layer,
                        int64_t rows, const at::Tensor& cos, const at::Tensor& sin) const {
    const int64_t d = head_dim_, half = d / 2, row_width = (heads_ + 2 * kv_heads_) * d;
    const auto stride = storage.strides();
    float* base = storage.data_ptr<float>() + layer * stride[0];
    const float* cos_table = cos.data_ptr<float>();
    const float* sin_table = sin.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      const float* c = cos_table + pos[r] * d;
      const float* s = sin_table + pos[r] * d;
      const float* row = qkv + r * row_width;
      for (int64_t head = 0; head < heads_ + kv_heads_; ++head) {
        const float* in = row + head * d;
        float* out = head < heads_
                         ? q + (r * heads_ + head) * d
                         : base + r * stride[2] + (head - heads_) * stride[3] + pos[r] * stride[4];
        for (int64_t j = 0; j < half; ++j) out[j] = in[j] * c[j] + (-in[j + half]) * s[j];
        for (int64_t j = half; j < d; ++j) out[j] = in[j] * c[j] + in[j - half] * s[j];
      }
      for (int64_t head = 0; head < kv_heads_; ++head) {
        const float* in = row + (heads_ + kv_heads_ + head) * d;
        float* out = base + stride[1] + r * stride[2] + head * stride[3] + pos[r] * stride[4];
        std::copy(in, in + d, out);
      }
    }
  }

  // act = SiLU(gate) * up, from the fused gate/up product's rows [gate | up].
  void silu_times_up(const at::Tensor& gate_up, float* act, int64_t rows) const {
    const float* gu = gate_up.data_ptr<float>();
    const int64_t n = intermediate_;
    for (int64_t r = 0; r < rows; ++r) {
      const float* gate = gu + r * 2 * n;
      const float* up = gate + n;
      for (int64_t j = 0; j < n; ++j) act[r * n + j] = gate[j] / (1.f + std::exp(-gate[j])) * up[j];
    }
  }

  static void add_rows(float* h, const at::Tensor& y, int64_t rows, int64_t width) {
    const at::Tensor values = y.contiguous();
    const float* ys = values.data_ptr<float>();
    for (int64_t i = 0; i < rows * width; ++i) h[i] += ys[i];
  }

  std::vector<at::Tensor> norms_;
  std::vector<int64_t> kinds_;
  std::vector<at::Tensor> packed_, scales_, dense_;
  int64_t heads_, kv_heads_, head_dim_, intermediate_;
  float eps_;
  double scaling_;
  int64_t int4_group_, packed_rows_, layers_;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  pybind11::class_<FusedDecode>(module, "FusedDecode")
      .def(pybind11::init<std::vector<at::Tensor>, std::vector<int64_t>, std::vector<at::Tensor>,
                          std::vector<at::Tensor>, std::vector<at::Tensor>, int64_t, int64_t, int64_t, int64_t,
                          double, double, int64_t, int64_t>())
      .def("step", &FusedDecode::step, pybind11::call_guard<pybind11::gil_scoped_release>());
}
