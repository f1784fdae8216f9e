#include "core/dispatch.h"

namespace microflex {

void register_random_ops(Dispatcher&) {}

}  // namespace microflex
