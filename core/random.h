// The global default random generator: a Philox seed plus an offset that every random op
// call advances by one (Note [Random element layout] in kernels/cpu/philox.h). Ops take
// (seed, offset) as attributes, so a traced graph replays the same numbers.
#pragma once
#include <cstdint>

#include "core/dispatch.h"

namespace microflex {

struct PhiloxSeedOffset {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// PyTorch's default seed, used until manual_seed is called.
constexpr uint64_t kDefaultSeed = 67280421310721ull;

// The current (seed, offset) of the default generator, then advances the offset by one.
// Thread-safe.
PhiloxSeedOffset next_philox_seed_offset();
// The current state without advancing it.
PhiloxSeedOffset default_generator_state();
// Restores a state taken with default_generator_state (manual_seed(s) is set(s, 0)).
void set_default_generator_state(PhiloxSeedOffset s);

// (seed, offset) as op attributes; the uint64 bits are stored in int64 attributes.
void set_philox_attrs(Attrs& a, PhiloxSeedOffset s);
PhiloxSeedOffset philox_attrs(const Attrs& a);

}  // namespace microflex
