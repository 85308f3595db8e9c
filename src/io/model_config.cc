#include "io/model_config.h"
namespace whittle {}
