// microflex-inspect: shapes, parameters, FLOPs and device memory of a GPT training step,
// estimated in fake mode (no data, no GPU). The logic lives in models/inspect.h.
#include <iostream>
#include <string>
#include <vector>

#include "models/inspect.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  return microflex::inspect_main(args, std::cout, std::cerr);
}
