#include "CLoomNetfilter.h"
