#include "core/dispatch.h"

namespace microflex {

void register_nn_ops(Dispatcher&) {}

}  // namespace microflex
