// Note [Generated mods] in codegen.h: one pass over the graph's nodes, one C++ local per
// value, constants inline.
#include "ops/flex_attention/codegen.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>

namespace microflex::flex_codegen {

namespace {

const char* c_type(DType t) {
  switch (t) {
    case DType::Bool:
      return "bool";
    case DType::Int32:
      return "int";
    case DType::Int64:
      return "long long";
    case DType::Float64:
      return "double";
    default:
      return "float";  // float32, and float16/bfloat16 computed in float
  }
}

bool is_half(DType t) {
  return t == DType::Float16 || t == DType::BFloat16;
}

int category(DType t) {
  return t == DType::Bool ? 0 : is_floating(t) ? 2 : 1;
}

std::string float_literal(double x, DType t) {
  const bool dbl = t == DType::Float64;
  if (std::isnan(x))
    return dbl ? "__longlong_as_double(0x7ff8000000000000LL)" : "__int_as_float(0x7fc00000)";
  if (std::isinf(x)) {
    const std::string inf =
        dbl ? "__longlong_as_double(0x7ff0000000000000LL)" : "__int_as_float(0x7f800000)";
    return x < 0 ? "(-" + inf + ")" : inf;
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), dbl ? "%.17g" : "%.9g", x);
  std::string s = buf;
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  if (!dbl) s += "f";
  return x < 0 ? "(" + s + ")" : s;
}

// Literal of `s` as a value of dtype t.
std::string literal(const Scalar& s, DType t) {
  if (t == DType::Bool) return s.to_double() != 0 ? "true" : "false";
  if (is_floating(t)) return float_literal(s.to_double(), t);
  const int64_t v = s.is_floating() ? static_cast<int64_t>(s.to_double()) : s.to_int();
  const std::string body = std::to_string(v) + (t == DType::Int64 ? "LL" : "");
  return v < 0 ? "(" + body + ")" : body;
}

class Emitter {
 public:
  Emitter(const graph::Graph& g, const char* which, size_t num_args)
      : g_(g), which_(which), num_args_(num_args) {}

  std::string run(const std::vector<std::string>& arg_names, DType ret) {
    const auto& ins = g_.inputs();
    MF_CHECK(ins.size() - num_args_ <= static_cast<size_t>(kMaxCaptured),
             "flex_attention: cannot generate GPU code for ", which_, ": it captures ",
             ins.size() - num_args_, " tensors (at most ", kMaxCaptured, "); use the dense path");
    for (size_t i = 0; i < ins.size(); ++i) {
      if (i < num_args_) {
        values_[ins[i]] = {arg_names[i], g_.meta(ins[i]).dtype, false, {}};
      } else {
        const TensorMeta& m = g_.meta(ins[i]);
        MF_CHECK(m.sizes.size() <= static_cast<size_t>(kMaxCapturedDims),
                 "flex_attention: cannot generate GPU code for ", which_,
                 ": a captured tensor has shape ", shape_str(m.sizes), " (at most ",
                 kMaxCapturedDims, " dims); use the dense path");
        captured_[ins[i]] = static_cast<int>(i - num_args_);
      }
    }
    for (const graph::Node& n : g_.nodes()) emit(n);
    MF_CHECK(g_.outputs().size() == 1, "flex_attention: ", which_, " must return one tensor");
    const int64_t out = g_.outputs()[0];
    MF_CHECK(values_.count(out), "flex_attention: cannot generate GPU code for ", which_,
             ": it returns a captured tensor; use the dense path");
    body_ << "  return " << cast(out, ret == DType::Bool ? DType::Bool : DType::Float32) << ";\n";
    return body_.str();
  }

 private:
  struct Value {
    std::string text;
    DType dtype;
    bool constant;
    Scalar scalar;
  };

  [[noreturn]] void unsupported(const std::string& op, const std::string& why = "") {
    MF_CHECK(false, "flex_attention: cannot generate GPU code for op '", op, "' in ", which_, why,
             "; use the dense path");
    std::abort();
  }

  const Value& value(const graph::Node& n, size_t i) {
    const int64_t v = n.inputs.at(i);
    auto it = values_.find(v);
    if (it == values_.end()) unsupported(n.op, " (it reads a captured tensor as a whole)");
    return it->second;
  }

  std::string cast(int64_t v, DType to) { return cast(values_.at(v), to); }
  std::string cast(const Value& x, DType to) {
    if (x.constant) return literal(x.scalar, to);
    if (to == DType::Bool) return x.dtype == DType::Bool ? x.text : "(" + x.text + " != 0)";
    if (is_half(to) && x.dtype != to) return round(to, "static_cast<float>(" + x.text + ")");
    if (std::string(c_type(x.dtype)) == c_type(to)) return x.text;
    return "static_cast<" + std::string(c_type(to)) + ">(" + x.text + ")";
  }
  static std::string round(DType t, const std::string& e) {
    return std::string(t == DType::BFloat16 ? "mf_round_bf16(" : "mf_round_f16(") + e + ")";
  }

  // The dtype a binary op computes in: result_type with wrapped scalars not promoting.
  DType compute_type(const Value& a, const Value& b) {
    if (a.constant == b.constant) return promote_types(a.dtype, b.dtype);
    const Value& t = a.constant ? b : a;
    const Value& s = a.constant ? a : b;
    if (category(s.dtype) <= category(t.dtype)) return t.dtype;
    return is_floating(s.dtype) ? DType::Float32 : DType::Int64;
  }

  void define(const graph::Node& n, const std::string& expr) {
    const DType t = n.output_metas.at(0).dtype;
    const std::string name = "v" + std::to_string(n.outputs[0]);
    body_ << "  const " << c_type(t) << " " << name << " = " << (is_half(t) ? round(t, expr) : expr)
          << ";\n";
    values_[n.outputs[0]] = {name, t, false, {}};
  }

  std::string unary_float(const std::string& op, DType t, const std::string& x) {
    const bool d = t == DType::Float64;
    const std::string f = d ? "" : "f";
    if (op == "exp") return "exp" + f + "(" + x + ")";
    if (op == "exp2") return "exp2" + f + "(" + x + ")";
    if (op == "log") return "log" + f + "(" + x + ")";
    if (op == "log2") return "log2" + f + "(" + x + ")";
    if (op == "sqrt") return "sqrt" + f + "(" + x + ")";
    if (op == "rsqrt") return "rsqrt" + f + "(" + x + ")";
    if (op == "sin") return "sin" + f + "(" + x + ")";
    if (op == "cos") return "cos" + f + "(" + x + ")";
    if (op == "tanh") return "tanh" + f + "(" + x + ")";
    if (op == "sigmoid")
      return d ? "1.0 / (1.0 + exp(-" + x + "))" : "1.0f / (1.0f + expf(-" + x + "))";
    return "";
  }

  void emit(const graph::Node& n) {
    const std::string& op = n.op;
    if (n.outputs.size() != 1 || n.output_metas.size() != 1) unsupported(op);
    const TensorMeta& om = n.output_metas[0];
    if (op == "scalar_tensor" && om.sizes.empty()) {
      values_[n.outputs[0]] = {"", om.dtype, n.attrs.has("wrapped") && n.attrs.b("wrapped"),
                               n.attrs.scalar("value")};
      // A non-wrapped constant promotes like a tensor: keep it as a local.
      if (!values_[n.outputs[0]].constant) {
        const Scalar s = n.attrs.scalar("value");
        values_.erase(n.outputs[0]);
        define(n, literal(s, om.dtype));
      }
      return;
    }
    if (!om.sizes.empty()) unsupported(op, " (on a non-scalar value)");
    const DType t = om.dtype;
    const char* ct = c_type(t);
    if (op == "index") {
      auto cit = captured_.find(n.inputs.at(0));
      if (cit == captured_.end()) unsupported(op, " (its source is not a captured tensor)");
      const TensorMeta& src = g_.meta(n.inputs[0]);
      if (n.inputs.size() - 1 != src.sizes.size())
        unsupported(op, " (it must index every dim of the captured tensor)");
      const std::string id = std::to_string(n.outputs[0]);
      const std::string tix = std::to_string(cit->second);
      body_ << "  long long o" << id << " = 0;\n  const bool k" << id << " = ";
      for (size_t j = 1; j < n.inputs.size(); ++j) {
        const Value& ix = value(n, j);
        if (category(ix.dtype) != 1) unsupported(op, " (with a non-integer index)");
        body_ << (j > 1 ? " && " : "") << "mf_index_dim(cap, " << tix << ", " << j - 1 << ", "
              << cast(ix, DType::Int64) << ", o" << id << ")";
      }
      body_ << ";\n";
      const char* loader = src.dtype == DType::BFloat16  ? "mf_load_bf16"
                           : src.dtype == DType::Float16 ? "mf_load_f16"
                                                         : nullptr;
      std::string load = loader ? std::string(loader) + "(cap.t[" + tix + "].data, o" + id + ")"
                                : "static_cast<const " + std::string(c_type(src.dtype)) +
                                      "*>(cap.t[" + tix + "].data)[o" + id + "]";
      const Value zero{"", t, true, Scalar(int64_t{0})};
      define(n, "k" + id + " ? " + load + " : " + cast(zero, t));
      return;
    }
    for (size_t i = 0; i < n.inputs.size(); ++i) value(n, i);  // every input is a scalar value
    if (n.inputs.size() == 2 && (op == "add" || op == "sub" || op == "mul" || op == "div")) {
      const char* sym = op == "add" ? " + " : op == "sub" ? " - " : op == "mul" ? " * " : " / ";
      if (op == "div" && !is_floating(t)) unsupported(op, " (integer division)");
      const DType ot = is_half(t) ? DType::Float32 : t;
      define(n, cast(n.inputs[0], ot) + sym + cast(n.inputs[1], ot));
      return;
    }
    if (n.inputs.size() == 2 && (op == "maximum" || op == "minimum" || op == "pow" ||
                                 op == "remainder" || op == "floor_divide")) {
      const DType ot = is_half(t) ? DType::Float32 : t;
      const std::string a = cast(values_.at(n.inputs[0]), ot),
                        b = cast(values_.at(n.inputs[1]), ot);
      if (op == "pow") {
        if (!is_floating(t)) unsupported(op, " (on integers)");
        define(n, std::string(t == DType::Float64 ? "pow(" : "powf(") + a + ", " + b + ")");
      } else {
        define(n, "mf_" + op + "(" + a + ", " + b + ")");
      }
      return;
    }
    static const std::map<std::string, const char*> cmp{{"eq", " == "}, {"ne", " != "},
                                                        {"lt", " < "},  {"le", " <= "},
                                                        {"gt", " > "},  {"ge", " >= "}};
    if (n.inputs.size() == 2 && cmp.count(op)) {
      const Value &a = values_.at(n.inputs[0]), &b = values_.at(n.inputs[1]);
      DType c = compute_type(a, b);
      if (is_half(c)) c = DType::Float32;
      define(n, cast(a, c) + cmp.at(op) + cast(b, c));
      return;
    }
    if (n.inputs.size() == 2 &&
        (op == "logical_and" || op == "logical_or" || op == "logical_xor")) {
      const std::string a = cast(values_.at(n.inputs[0]), DType::Bool);
      const std::string b = cast(values_.at(n.inputs[1]), DType::Bool);
      define(n, a + (op == "logical_and" ? " && " : op == "logical_or" ? " || " : " != ") + b);
      return;
    }
    if (n.inputs.size() == 3 && op == "where") {
      define(n, cast(n.inputs[0], DType::Bool) + " ? " + cast(n.inputs[1], t) + " : " +
                    cast(n.inputs[2], t));
      return;
    }
    if (n.inputs.size() != 1) unsupported(op);
    const Value& x = values_.at(n.inputs[0]);
    if (op == "to_dtype") return define(n, cast(x, t));
    if (op == "logical_not") return define(n, "!" + cast(x, DType::Bool));
    const DType ot = is_half(t) ? DType::Float32 : t;
    const std::string a = cast(x, ot);
    if (op == "neg") return define(n, "-" + a);
    if (op == "abs") return define(n, "mf_abs(" + a + ")");
    if (op == "sign")
      return define(n, "static_cast<" + std::string(ct) + ">((" + a + " > 0) - (" + a + " < 0))");
    if (op == "relu") return define(n, "(" + a + " < 0 ? static_cast<" + ct + ">(0) : " + a + ")");
    if (op == "clamp") {
      std::string e = a;
      if (n.attrs.has("min"))
        e = "mf_maximum(" + e + ", " + literal(n.attrs.scalar("min"), ot) + ")";
      if (n.attrs.has("max"))
        e = "mf_minimum(" + e + ", " + literal(n.attrs.scalar("max"), ot) + ")";
      return define(n, e);
    }
    if (is_floating(t)) {
      const std::string e = unary_float(op, ot, a);
      if (!e.empty()) return define(n, e);
    }
    unsupported(op);
  }

  const graph::Graph& g_;
  const char* which_;
  size_t num_args_;
  std::map<int64_t, Value> values_;
  std::map<int64_t, int> captured_;  // value id -> slot in FlexCaptured
  std::ostringstream body_;
};

}  // namespace

std::string generate_score_mod(const graph::Graph& g) {
  MF_CHECK(g.inputs().size() >= 5, "flex_attention: a score_mod graph has 5 leading inputs");
  const std::string body =
      Emitter(g, "score_mod", 5).run({"score", "b", "h", "q", "kv"}, DType::Float32);
  return "__device__ __forceinline__ float score_mod(float score, int b, int h, int q, int kv,\n"
         "                                           const FlexCaptured& cap) {\n" +
         body + "}\n";
}

std::string generate_mask_mod(const graph::Graph& g) {
  MF_CHECK(g.inputs().size() >= 4, "flex_attention: a mask_mod graph has 4 leading inputs");
  const std::string body = Emitter(g, "mask_mod", 4).run({"b", "h", "q", "kv"}, DType::Bool);
  return "__device__ __forceinline__ bool mask_mod(int b, int h, int q, int kv,\n"
         "                                         const FlexCaptured& cap) {\n" +
         body + "}\n";
}

bool uses_index(const graph::Graph& g) {
  for (const graph::Node& n : g.nodes())
    if (n.op == "index") return true;
  return false;
}

}  // namespace microflex::flex_codegen
