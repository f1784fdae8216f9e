#include "core/dispatch.h"

namespace microflex {

void register_linalg_ops(Dispatcher&) {}

}  // namespace microflex
