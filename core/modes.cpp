#include "core/dispatch.h"

namespace microflex {

void register_modes(Dispatcher&) {}

}  // namespace microflex
