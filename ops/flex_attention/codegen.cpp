// Note [Generated mods] in codegen.h: one pass over the graph's nodes, one C++ local per
// value, constants inline. The backward (Note [Generated score_mod backward]) emits the
// joint forward + backward graph that autograd records for one score element.
#include "ops/flex_attention/codegen.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "autograd/grad_mode.h"

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

// What the backward emitter needs from the joint graph's liveness pass (plan_backward).
struct BackwardPlan {
  struct Scatter {
    int slot;           // captured tensor slot the gradient belongs to
    int64_t index_out;  // output of the forward `index` node whose offset it reuses
  };
  std::set<size_t> live_nodes;          // node positions whose code is kept
  std::set<int64_t> offset_only;        // `index` outputs needed only for their offset
  std::map<int64_t, Scatter> scatters;  // index_backward output -> where it adds
};

class Emitter {
 public:
  // `what` completes "cannot generate ... op 'X' in <which>": "GPU code for" or "the GPU
  // backward of". With a plan, the backward-only ops of a joint graph are emitted too.
  Emitter(const graph::Graph& g, const char* which, const char* what,
          const BackwardPlan* plan = nullptr)
      : g_(g), which_(which), what_(what), plan_(plan) {}

  // Binds graph input i to a function argument (a scalar named `name`).
  void bind_arg(size_t i, const std::string& name) {
    const int64_t v = g_.inputs().at(i);
    values_[v] = {name, g_.meta(v).dtype, false, {}};
  }
  // Binds graph input i to captured tensor `slot` (cap.t[slot]).
  void bind_captured(size_t i, int slot) {
    const int64_t v = g_.inputs().at(i);
    const TensorMeta& m = g_.meta(v);
    MF_CHECK(m.sizes.size() <= static_cast<size_t>(kMaxCapturedDims), "flex_attention: cannot ",
             "generate ", what_, " ", which_, ": a captured tensor has shape ", shape_str(m.sizes),
             " (at most ", kMaxCapturedDims, " dims); use the dense path");
    captured_[v] = slot;
  }

  // Binds value v (a node's output) to an expression computed elsewhere, e.g. a field of
  // the split mask's row struct.
  void bind_value(int64_t v, const std::string& text) {
    values_[v] = {text, g_.meta(v).dtype, false, {}};
  }
  // Value v as an expression of its own dtype's C type.
  std::string text_of(int64_t v) { return cast(v, g_.meta(v).dtype); }

  // Emits one node; its code is collected by take().
  void emit_node(const graph::Node& n) { emit(n); }
  std::string take() {
    std::string s = body_.str();
    body_.str("");
    return s;
  }
  // The return statement for value v converted to `ret`.
  std::string ret(int64_t v, DType ret) {
    MF_CHECK(values_.count(v), "flex_attention: cannot generate ", what_, " ", which_,
             ": it returns a captured tensor; use the dense path");
    return "  return " + cast(v, ret) + ";\n";
  }

  // The forward mods: every node, then the return of the graph's only output.
  std::string run(const std::vector<std::string>& arg_names, DType ret_type) {
    const auto& ins = g_.inputs();
    const size_t num_args = arg_names.size();
    MF_CHECK(ins.size() - num_args <= static_cast<size_t>(kMaxCaptured),
             "flex_attention: cannot generate GPU code for ", which_, ": it captures ",
             ins.size() - num_args, " tensors (at most ", kMaxCaptured, "); use the dense path");
    for (size_t i = 0; i < ins.size(); ++i) {
      if (i < num_args)
        bind_arg(i, arg_names[i]);
      else
        bind_captured(i, static_cast<int>(i - num_args));
    }
    std::string body;
    for (const graph::Node& n : g_.nodes()) {
      emit(n);
      body += take();
    }
    MF_CHECK(g_.outputs().size() == 1, "flex_attention: ", which_, " must return one tensor");
    return body + ret(g_.outputs()[0], ret_type == DType::Bool ? DType::Bool : DType::Float32);
  }

 private:
  struct Value {
    std::string text;
    DType dtype;
    bool constant;
    Scalar scalar;
  };

  [[noreturn]] void unsupported(const std::string& op, const std::string& why = "") {
    MF_CHECK(false, "flex_attention: cannot generate ", what_, " op '", op, "' in ", which_, why,
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
    if (plan_ && emit_backward_only(n)) return;
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
      if (plan_ && plan_->offset_only.count(n.outputs[0])) {
        // Only the offset is used (by a gradient scatter): no load.
        values_[n.outputs[0]] = {"v" + id, t, false, {}};
        return;
      }
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
    // & | ^ on bool values are the logical ops; on integers the C++ operators, in the
    // promoted type.
    if (n.inputs.size() == 2 &&
        (op == "bitwise_and" || op == "bitwise_or" || op == "bitwise_xor")) {
      const char* sym = op == "bitwise_and" ? " & " : op == "bitwise_or" ? " | " : " ^ ";
      if (t == DType::Bool) {
        define(n, cast(n.inputs[0], DType::Bool) + sym + cast(n.inputs[1], DType::Bool));
        return;
      }
      if (category(t) != 1) unsupported(op, " (on floating values)");
      define(n, cast(n.inputs[0], t) + sym + cast(n.inputs[1], t));
      return;
    }
    if (n.inputs.size() == 1 && op == "bitwise_not") {
      const Value& x = values_.at(n.inputs[0]);
      if (t == DType::Bool) return define(n, "!" + cast(x, DType::Bool));
      if (category(t) != 1) unsupported(op, " (on floating values)");
      return define(n, "~" + cast(x, t));
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

  // The ops that only a joint graph's backward part records (Note [Generated score_mod
  // backward]); true when n was one of them.
  bool emit_backward_only(const graph::Node& n) {
    const std::string& op = n.op;
    const TensorMeta& om = n.output_metas[0];
    const int64_t out = n.outputs[0];
    if (!om.sizes.empty()) {
      // Gradient buffers of captured tensors: index_backward scatters one element into a
      // zero tensor; the engine clones, converts and sums such buffers. Each scatter
      // becomes one mf_grad_add, so the buffers themselves have no code.
      auto is_buffer = [&](int64_t v) { return grad_buffers_.count(v) > 0; };
      if (op == "index_backward") {
        const Value& g = value(n, 0);
        auto sc = plan_->scatters.find(out);
        if (sc != plan_->scatters.end()) {
          const std::string ix = std::to_string(sc->second.index_out);
          body_ << "  if (k" << ix << ") mf_grad_add(gcap, " << sc->second.slot << ", o" << ix
                << ", " << cast(g, DType::Float32) << ");\n";
        }
      } else if (op == "full") {
        if (n.attrs.scalar("value").to_double() != 0) return false;
      } else if (op == "clone" || op == "to_dtype" || op == "contiguous") {
        if (!is_buffer(n.inputs.at(0))) return false;
      } else if (op == "add") {
        if (!is_buffer(n.inputs.at(0)) || !is_buffer(n.inputs.at(1))) return false;
      } else {
        return false;
      }
      grad_buffers_.insert(out);
      return true;
    }
    // On 0-d values, sum_to's and the engine's shape ops are the identity.
    static const std::set<std::string> identity{"clone",  "contiguous", "reshape",   "view",
                                                "expand", "squeeze",    "unsqueeze", "sum",
                                                "sum_to", "detach"};
    if (identity.count(op) && n.inputs.size() == 1 && g_.meta(n.inputs[0]).sizes.empty()) {
      const Value& x = value(n, 0);
      if (x.dtype == om.dtype)
        values_[out] = x;
      else
        define(n, cast(x, om.dtype));
      return true;
    }
    if (op == "full") {
      define(n, literal(n.attrs.scalar("value"), om.dtype));
      return true;
    }
    return false;
  }

  const graph::Graph& g_;
  const char* which_;
  const char* what_;
  const BackwardPlan* plan_;
  std::map<int64_t, Value> values_;
  std::map<int64_t, int> captured_;  // value id -> slot in FlexCaptured
  std::set<int64_t> grad_buffers_;   // non-scalar gradient values (no code)
  std::ostringstream body_;
};

// ---- score_mod backward ----

// The joint graph of one score element: inputs score, b, h, q, kv, the captured tensors,
// then grad; the gradients' value ids (-1 where there is none).
struct JointScoreMod {
  std::shared_ptr<graph::Graph> graph;
  int64_t score_grad = -1;
  std::vector<int64_t> captured_grad;  // per slot; -1 unless it needs grad and has one
};

// Raises the codegen error for an op on the differentiable path without a derivative
// (autograd would raise its own, less helpful one while tracing).
void check_derivatives(const graph::Graph& g, const std::vector<bool>& needs_grad) {
  std::set<int64_t> grad_values;  // values that carry a gradient
  grad_values.insert(g.inputs()[0]);
  for (size_t i = 0; i < needs_grad.size(); ++i)
    if (needs_grad[i]) grad_values.insert(g.inputs()[5 + i]);
  for (const graph::Node& n : g.nodes()) {
    bool any = false;
    for (int64_t v : n.inputs) any = any || grad_values.count(v);
    const OpDef* op = Dispatcher::get().find_or_null(n.op);
    if (!any || !op || !op->differentiable) continue;
    MF_CHECK(op->backward != nullptr, "flex_attention: cannot generate the GPU backward of op '",
             n.op, "' in score_mod (it has no derivative); use the dense path");
    for (size_t j = 0; j < n.outputs.size(); ++j)
      if (is_floating(n.output_metas[j].dtype)) grad_values.insert(n.outputs[j]);
  }
}

// Reruns the score_mod graph on proxies with autograd on and calls backward with `grad`
// as the seed while still tracing (like graph::trace_joint, whose seed is ones): the
// registered backward formulas are recorded as ordinary nodes after the forward's.
JointScoreMod trace_joint_score_mod(const graph::Graph& g, const std::vector<bool>& needs_grad) {
  const TensorMeta& sm = g.meta(g.inputs()[0]);
  TensorList examples;
  for (size_t i = 0; i < g.inputs().size(); ++i) {
    const TensorMeta& m = g.meta(g.inputs()[i]);
    Tensor t = Tensor::make(m.sizes, m.dtype, m.device, true);
    if (i == 0 || (i >= 5 && needs_grad[i - 5])) t.requires_grad_();
    examples.push_back(t);
  }
  examples.push_back(Tensor::make({}, sm.dtype, sm.device, true));  // grad
  JointScoreMod j;
  j.graph = std::make_shared<graph::Graph>();
  graph::Tracer tr(j.graph);
  graph::TracingGuard guard(&tr);
  EnableGradGuard grad_on;
  TensorList proxies;
  for (const Tensor& x : examples) proxies.push_back(tr.placeholder(x));
  const TensorList ins(proxies.begin(), proxies.end() - 1);
  Tensor out = graph::GraphModule(std::make_shared<graph::Graph>(g), {}).run_all(ins)[0];
  // The dense path converts score_mod's result to the score's dtype before the softmax.
  if (out.dtype() != sm.dtype) out = out.to(sm.dtype);
  if (out.requires_grad()) out.backward(proxies.back());
  auto grad_id = [&](const Tensor& p) {
    return p.requires_grad() && p.grad().defined() ? tr.id_of(tr.proxy_for(p.grad())) : int64_t{-1};
  };
  j.score_grad = grad_id(proxies[0]);
  for (size_t i = 5; i < ins.size(); ++i) j.captured_grad.push_back(grad_id(ins[i]));
  MF_INTERNAL_ASSERT(tr.captured().empty(), "flex_attention: the joint score_mod graph lifted ",
                     tr.captured().size(), " tensors");
  return j;
}

// Which nodes of the joint graph the backward needs, walking back from the score's
// gradient and the captured tensors' gradient buffers. A buffer's index_backward nodes
// become scatters at the offset of the forward `index` of the same slot and indices.
BackwardPlan plan_backward(const JointScoreMod& j) {
  const graph::Graph& g = *j.graph;
  const auto& nodes = g.nodes();
  BackwardPlan plan;
  std::set<int64_t> live, offset_needed;
  std::map<int64_t, int> slot_of;  // gradient buffer -> captured slot
  if (j.score_grad >= 0) live.insert(j.score_grad);
  for (size_t s = 0; s < j.captured_grad.size(); ++s)
    if (j.captured_grad[s] >= 0) slot_of[j.captured_grad[s]] = static_cast<int>(s);
  auto mark = [&](int64_t v) {
    if (v >= 0) live.insert(v);
  };
  for (size_t k = nodes.size(); k-- > 0;) {
    const graph::Node& n = nodes[k];
    bool keep = false;
    for (int64_t o : n.outputs) keep = keep || live.count(o);
    auto sl = n.outputs.size() == 1 ? slot_of.find(n.outputs[0]) : slot_of.end();
    if (sl != slot_of.end()) {
      keep = true;
      if (n.op == "index_backward") {
        const int64_t src = g.inputs()[5 + static_cast<size_t>(sl->second)];
        for (const graph::Node& f : nodes) {
          if (f.op != "index" || f.inputs.at(0) != src || f.inputs.size() != n.inputs.size() ||
              !std::equal(f.inputs.begin() + 1, f.inputs.end(), n.inputs.begin() + 1))
            continue;
          plan.scatters[n.outputs[0]] = {sl->second, f.outputs[0]};
          offset_needed.insert(f.outputs[0]);
          break;
        }
        MF_INTERNAL_ASSERT(plan.scatters.count(n.outputs[0]),
                           "flex_attention: no forward index for an index_backward of slot ",
                           sl->second);
        mark(n.inputs[0]);
      } else {
        for (int64_t v : n.inputs) {
          if (v >= 0 && !g.meta(v).sizes.empty())
            slot_of[v] = sl->second;
          else
            mark(v);
        }
      }
    } else if (n.op == "index" && n.outputs.size() == 1 && offset_needed.count(n.outputs[0])) {
      if (!keep) plan.offset_only.insert(n.outputs[0]);
      keep = true;
      for (size_t i = 1; i < n.inputs.size(); ++i) mark(n.inputs[i]);
    } else if (keep) {
      for (int64_t v : n.inputs) mark(v);
    }
    if (keep) plan.live_nodes.insert(k);
  }
  return plan;
}

}  // namespace

std::string generate_score_mod(const graph::Graph& g) {
  MF_CHECK(g.inputs().size() >= 5, "flex_attention: a score_mod graph has 5 leading inputs");
  const std::string body =
      Emitter(g, "score_mod", "GPU code for").run({"score", "b", "h", "q", "kv"}, DType::Float32);
  return "__device__ __forceinline__ float score_mod(float score, int b, int h, int q, int kv,\n"
         "                                           const FlexCaptured& cap) {\n" +
         body + "}\n";
}

std::string generate_mask_mod(const graph::Graph& g) {
  MF_CHECK(g.inputs().size() >= 4, "flex_attention: a mask_mod graph has 4 leading inputs");
  const std::string body =
      Emitter(g, "mask_mod", "GPU code for").run({"b", "h", "q", "kv"}, DType::Bool);
  return "__device__ __forceinline__ bool mask_mod(int b, int h, int q, int kv,\n"
         "                                         const FlexCaptured& cap) {\n" +
         body + "}\n";
}

// ---- split mask_mod ----

namespace {

// Which of q_idx / kv_idx a value depends on (bits of kQ, kKv); scalar_tensor constants
// are free: emitted wherever used.
constexpr int kQ = 1, kKv = 2, kBoth = 3;

struct MaskSplit {
  std::map<int64_t, int> dep;   // value -> kQ / kKv bits (b, h and constants: 0)
  std::set<int64_t> free;       // constant values
  std::set<int64_t> fields[2];  // the q struct's fields (0), the kv struct's (1)
  std::set<int64_t> need[3];    // values each function computes: q, kv, pair
};

// Whether node n computes a value in `values`.
bool computes_any(const graph::Node& n, const std::set<int64_t>& values) {
  for (int64_t o : n.outputs)
    if (values.count(o)) return true;
  return false;
}

// Walks the nodes from last to first and calls visit(v) on the inputs of each that computes
// a value in `values` (which visit may grow), all but a gather's source tensor.
template <class F>
void visit_needed_inputs(const std::vector<graph::Node>& nodes, const std::set<int64_t>& values,
                         F visit) {
  for (size_t k = nodes.size(); k-- > 0;) {
    const graph::Node& n = nodes[k];
    if (!computes_any(n, values)) continue;
    for (size_t i = n.op == "index" ? 1 : 0; i < n.inputs.size(); ++i) visit(n.inputs[i]);
  }
}

MaskSplit plan_mask_split(const graph::Graph& g) {
  MaskSplit p;
  const auto& ins = g.inputs();
  for (size_t i = 0; i < ins.size(); ++i) p.dep[ins[i]] = i == 2 ? kQ : i == 3 ? kKv : 0;
  for (const graph::Node& n : g.nodes()) {
    int d = 0;
    for (int64_t v : n.inputs) d |= p.dep.count(v) ? p.dep.at(v) : 0;
    for (int64_t o : n.outputs) p.dep[o] = d;
    if (n.op == "scalar_tensor")
      for (int64_t o : n.outputs) p.free.insert(o);
  }
  const std::set<int64_t> graph_inputs(ins.begin(), ins.end());
  // Where a value the pair function reads comes from: graph inputs are bound in every
  // function (b, h, q, kv as arguments, captured tensors for `index`).
  auto route = [&](int64_t v) {
    if (graph_inputs.count(v) || v < 0) return;
    if (p.free.count(v) || p.dep.at(v) == kBoth)
      p.need[2].insert(v);
    else
      p.fields[p.dep.at(v) == kKv ? 1 : 0].insert(v);
  };
  route(g.outputs().at(0));
  visit_needed_inputs(g.nodes(), p.need[2], route);
  // The q and kv functions compute their fields and everything those read.
  for (int s = 0; s < 2; ++s) {
    p.need[s] = p.fields[s];
    visit_needed_inputs(g.nodes(), p.need[s], [&](int64_t v) {
      if (!graph_inputs.count(v)) p.need[s].insert(v);
    });
  }
  return p;
}

}  // namespace

std::string generate_mask_mod_split(const graph::Graph& g) {
  MF_CHECK(g.inputs().size() >= 4, "flex_attention: a mask_mod graph has 4 leading inputs");
  MF_CHECK(g.outputs().size() == 1, "flex_attention: mask_mod must return one tensor");
  const size_t ncap = g.inputs().size() - 4;
  MF_CHECK(ncap <= static_cast<size_t>(kMaxCaptured),
           "flex_attention: cannot generate GPU code for mask_mod: it captures ", ncap,
           " tensors (at most ", kMaxCaptured, "); use the dense path");
  const MaskSplit p = plan_mask_split(g);
  static const char* const kStruct[2] = {"MfMaskQ", "MfMaskKv"};
  bool pair_gathers = false;
  for (const graph::Node& n : g.nodes())
    pair_gathers = pair_gathers || (n.op == "index" && computes_any(n, p.need[2]));
  std::string src =
      std::string("#define MF_MASK_PAIR_GATHERS ") + (pair_gathers ? "1" : "0") + "\n";
  for (int s = 0; s < 2; ++s) {
    src += std::string("struct ") + kStruct[s] + " {\n";
    for (int64_t v : p.fields[s])
      src += std::string("  ") + c_type(g.meta(v).dtype) + " v" + std::to_string(v) + ";\n";
    src += "};\n";
  }
  for (int s = 0; s < 2; ++s) {
    src += std::string("__device__ __forceinline__ ") + kStruct[s] + " mask_mod_shfl(const " +
           kStruct[s] + "& x, int lane) {\n  " + kStruct[s] + " r;\n";
    for (int64_t v : p.fields[s]) {
      const std::string f = "v" + std::to_string(v);
      src += g.meta(v).dtype == DType::Bool
                 ? "  r." + f + " = __shfl_sync(0xffffffffu, static_cast<int>(x." + f +
                       "), lane) != 0;\n"
                 : "  r." + f + " = __shfl_sync(0xffffffffu, x." + f + ", lane);\n";
    }
    src += "  return r;\n}\n";
  }
  auto emitter_body = [&](Emitter& e, int which) {
    const std::vector<std::string> args{"b", "h", "q", "kv"};
    for (size_t i = 0; i < args.size(); ++i) e.bind_arg(i, args[i]);
    for (size_t i = 0; i < ncap; ++i) e.bind_captured(4 + i, static_cast<int>(i));
    std::string body;
    for (const graph::Node& n : g.nodes()) {
      if (!computes_any(n, p.need[which])) continue;
      e.emit_node(n);  // raises the generator's error for a node it cannot emit
      body += e.take();
    }
    return body;
  };
  static const char* const kSide[2] = {"q", "kv"};
  for (int s = 0; s < 2; ++s) {
    Emitter e(g, "mask_mod", "GPU code for");
    std::string body = emitter_body(e, s);
    body += std::string("  ") + kStruct[s] + " r;\n";
    for (int64_t v : p.fields[s])
      body += "  r.v" + std::to_string(v) + " = " + e.text_of(v) + ";\n";
    src += std::string("__device__ __forceinline__ ") + kStruct[s] + " mask_mod_" + kSide[s] +
           "(int b, int h, int " + kSide[s] + ", const FlexCaptured& cap) {\n" + body +
           "  return r;\n}\n";
  }
  Emitter e(g, "mask_mod", "GPU code for");
  for (int s = 0; s < 2; ++s)
    for (int64_t v : p.fields[s])
      e.bind_value(v, std::string(s == 0 ? "qv" : "kvv") + ".v" + std::to_string(v));
  const std::string body = emitter_body(e, 2);
  src +=
      "__device__ __forceinline__ bool mask_mod_pair(int b, int h, int q, int kv, const MfMaskQ& "
      "qv,\n                                              const MfMaskKv& kvv, const "
      "FlexCaptured& cap) {\n" +
      body + e.ret(g.outputs()[0], DType::Bool) + "}\n";
  return src;
}

std::string no_mask_mod() {
  return "#define MF_MASK_PAIR_GATHERS 0\n"
         "__device__ __forceinline__ bool mask_mod(int, int, int, int, const FlexCaptured&) {\n"
         "  return true;\n}\n"
         "struct MfMaskQ {};\nstruct MfMaskKv {};\n"
         "__device__ __forceinline__ MfMaskQ mask_mod_shfl(const MfMaskQ& x, int) {\n"
         "  return x;\n}\n"
         "__device__ __forceinline__ MfMaskKv mask_mod_shfl(const MfMaskKv& x, int) {\n"
         "  return x;\n}\n"
         "__device__ __forceinline__ MfMaskQ mask_mod_q(int, int, int, const FlexCaptured&) {\n"
         "  return MfMaskQ();\n}\n"
         "__device__ __forceinline__ MfMaskKv mask_mod_kv(int, int, int, const FlexCaptured&) {\n"
         "  return MfMaskKv();\n}\n"
         "__device__ __forceinline__ bool mask_mod_pair(int, int, int, int, const MfMaskQ&,\n"
         "                                              const MfMaskKv&, const FlexCaptured&) {\n"
         "  return true;\n}\n";
}

std::string generate_score_mod_backward(const graph::Graph& g,
                                        const std::vector<bool>& captured_needs_grad) {
  MF_CHECK(g.inputs().size() >= 5, "flex_attention: a score_mod graph has 5 leading inputs");
  const size_t ncap = g.inputs().size() - 5;
  MF_CHECK(ncap <= static_cast<size_t>(kMaxCaptured),
           "flex_attention: cannot generate the GPU backward of score_mod: it captures ", ncap,
           " tensors (at most ", kMaxCaptured, "); use the dense path");
  MF_CHECK(captured_needs_grad.size() == ncap, "flex_attention: score_mod captures ", ncap,
           " tensors, but ", captured_needs_grad.size(), " needs-grad flags were given");
  for (size_t i = 0; i < ncap; ++i) {
    const TensorMeta& m = g.meta(g.inputs()[5 + i]);
    MF_CHECK(!captured_needs_grad[i] || is_floating(m.dtype), "flex_attention: captured tensor ", i,
             " of score_mod is ", m.dtype, " ", shape_str(m.sizes),
             "; only floating tensors can need a gradient");
  }
  check_derivatives(g, captured_needs_grad);
  const JointScoreMod j = trace_joint_score_mod(g, captured_needs_grad);
  const BackwardPlan plan = plan_backward(j);
  const graph::Graph& jg = *j.graph;
  Emitter e(jg, "score_mod", "the GPU backward of", &plan);
  const std::vector<std::string> args{"score", "b", "h", "q", "kv"};
  for (size_t i = 0; i < args.size(); ++i) e.bind_arg(i, args[i]);
  for (size_t i = 0; i < ncap; ++i) e.bind_captured(5 + i, static_cast<int>(i));
  e.bind_arg(5 + ncap, "grad");
  std::string body;
  // Every node is emitted (so errors name the first op in program order); only the live
  // ones are kept.
  for (size_t k = 0; k < jg.nodes().size(); ++k) {
    e.emit_node(jg.nodes()[k]);
    const std::string code = e.take();
    if (plan.live_nodes.count(k)) body += code;
  }
  body += j.score_grad >= 0 ? e.ret(j.score_grad, DType::Float32) : "  return 0.0f;\n";
  static const char* const kSignature =
      R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
)";
  return kSignature + body + "}\n";
}

// ---- index range analysis ----

namespace {

// Integer interval [lo, hi]; values past +-2^31 count as unknown, so no sum or product
// of two bounds overflows the analysis itself.
struct Interval {
  int64_t lo, hi;
};
constexpr int64_t kIntervalLimit = int64_t{1} << 31;

std::optional<Interval> bounded(int64_t lo, int64_t hi) {
  if (lo < -kIntervalLimit || hi > kIntervalLimit) return std::nullopt;
  return Interval{lo, hi};
}

int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// The interval of node n's output from its inputs' (nullopt: unknown).
std::optional<Interval> node_interval(const graph::Node& n,
                                      const std::map<int64_t, Interval>& known) {
  auto in = [&](size_t i) -> std::optional<Interval> {
    auto it = known.find(n.inputs.at(i));
    if (it == known.end()) return std::nullopt;
    return it->second;
  };
  const std::string& op = n.op;
  if (op == "scalar_tensor") {
    const Scalar v = n.attrs.scalar("value");
    if (v.is_floating()) return std::nullopt;
    return bounded(v.to_int(), v.to_int());
  }
  if (n.inputs.size() == 1) {
    const auto a = in(0);
    if (!a) return std::nullopt;
    if (op == "to_dtype" || op == "clone") return a;
    if (op == "neg") return bounded(-a->hi, -a->lo);
    if (op == "abs")
      return a->lo >= 0   ? a
             : a->hi <= 0 ? bounded(-a->hi, -a->lo)
                          : bounded(0, std::max(-a->lo, a->hi));
    if (op == "clamp") {
      int64_t lo = a->lo, hi = a->hi;
      if (n.attrs.has("min")) {
        const int64_t m = n.attrs.scalar("min").to_int();
        lo = std::max(lo, m), hi = std::max(hi, m);
      }
      if (n.attrs.has("max")) {
        const int64_t m = n.attrs.scalar("max").to_int();
        lo = std::min(lo, m), hi = std::min(hi, m);
      }
      return bounded(lo, hi);
    }
    return std::nullopt;
  }
  if (op == "where" && n.inputs.size() == 3) {
    const auto x = in(1), y = in(2);
    if (!x || !y) return std::nullopt;
    return bounded(std::min(x->lo, y->lo), std::max(x->hi, y->hi));
  }
  if (n.inputs.size() != 2) return std::nullopt;
  const auto a = in(0), b = in(1);
  if (!a || !b) return std::nullopt;
  if (op == "add") return bounded(a->lo + b->lo, a->hi + b->hi);
  if (op == "sub") return bounded(a->lo - b->hi, a->hi - b->lo);
  if (op == "mul") {
    const int64_t p[4] = {a->lo * b->lo, a->lo * b->hi, a->hi * b->lo, a->hi * b->hi};
    return bounded(*std::min_element(p, p + 4), *std::max_element(p, p + 4));
  }
  if (op == "maximum") return bounded(std::max(a->lo, b->lo), std::max(a->hi, b->hi));
  if (op == "minimum") return bounded(std::min(a->lo, b->lo), std::min(a->hi, b->hi));
  // By a positive constant (Python's sign-of-the-divisor semantics, as mf_remainder).
  if (b->lo == b->hi && b->lo > 0) {
    if (op == "remainder") return bounded(0, b->lo - 1);
    if (op == "floor_divide") return bounded(floor_div(a->lo, b->lo), floor_div(a->hi, b->lo));
  }
  return std::nullopt;
}

}  // namespace

bool indices_in_range(const graph::Graph& g, size_t first_arg,
                      const std::vector<int64_t>& extents) {
  std::map<int64_t, Interval> known;
  const auto& ins = g.inputs();
  for (size_t i = 0; i < extents.size() && first_arg + i < ins.size(); ++i)
    if (extents[i] > 0) known[ins[first_arg + i]] = {0, extents[i] - 1};
  for (const graph::Node& n : g.nodes()) {
    if (n.outputs.size() != 1 || n.output_metas.size() != 1) continue;
    if (n.op == "index") {
      const TensorMeta& src = g.meta(n.inputs.at(0));
      if (n.inputs.size() - 1 != src.sizes.size()) return false;
      for (size_t j = 1; j < n.inputs.size(); ++j) {
        auto it = known.find(n.inputs[j]);
        const int64_t size = src.sizes[j - 1];
        if (it == known.end() || it->second.lo < -size || it->second.hi > size - 1) return false;
      }
      continue;  // the value read is data: unknown
    }
    const DType t = n.output_metas[0].dtype;
    if (t != DType::Int32 && t != DType::Int64) continue;
    const auto r = node_interval(n, known);
    // An int32 result outside int32 would wrap in the generated code.
    if (!r || (t == DType::Int32 && (r->lo < INT32_MIN || r->hi > INT32_MAX))) continue;
    known[n.outputs[0]] = *r;
  }
  return true;
}

bool uses_index(const graph::Graph& g) {
  for (const graph::Node& n : g.nodes())
    if (n.op == "index") return true;
  return false;
}

}  // namespace microflex::flex_codegen
