#include "core/dispatch.h"

namespace microflex {

void register_shape_ops(Dispatcher&) {}

}  // namespace microflex
