#include "core/dispatch.h"

namespace microflex {

void register_indexing_ops(Dispatcher&) {}

}  // namespace microflex
