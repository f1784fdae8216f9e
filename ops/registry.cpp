// The list of op groups: each file under ops/ defines its ops in one register_* function,
// called once here when the dispatcher is first used.
#include "autograd/node.h"
#include "core/dispatch.h"

namespace microflex {

void register_copy_ops(Dispatcher& d);
void register_view_ops(Dispatcher& d);
void register_factory_ops(Dispatcher& d);
void register_elementwise_ops(Dispatcher& d);
void register_inplace_arith_ops(Dispatcher& d);
void register_reduction_ops(Dispatcher& d);
void register_linalg_ops(Dispatcher& d);
void register_indexing_ops(Dispatcher& d);
void register_shape_ops(Dispatcher& d);
void register_nn_ops(Dispatcher& d);
void register_random_ops(Dispatcher& d);
void register_modes(Dispatcher& d);
void register_cuda_backend();

void register_builtin_ops(Dispatcher& d) {
  register_cuda_backend();
  register_copy_ops(d);
  register_view_ops(d);
  register_factory_ops(d);
  register_elementwise_ops(d);
  register_inplace_arith_ops(d);
  register_reduction_ops(d);
  register_linalg_ops(d);
  register_indexing_ops(d);
  register_shape_ops(d);
  register_nn_ops(d);
  register_random_ops(d);
  autograd::register_autograd_fallback(d);
  register_modes(d);
}

}  // namespace microflex
