// The one header a microflex user includes: tensors, ops, autograd, modes, files.
// `mf` is the short alias the examples use.
#pragma once
#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "core/device.h"
#include "core/dispatch.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/serialize.h"
#include "core/tensor.h"
#include "models/attention.h"
#include "models/gpt.h"
#include "models/layers.h"
#include "models/module.h"
#include "models/optim.h"
#include "ops/copy_ops.h"
#include "ops/elementwise.h"
#include "ops/indexing.h"
#include "ops/linalg.h"
#include "ops/nn.h"
#include "ops/reduction.h"
#include "ops/shape_ops.h"

namespace mf = microflex;
