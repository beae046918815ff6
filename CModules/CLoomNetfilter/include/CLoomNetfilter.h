// nf_tables netlink batches over libmnl + libnftnl. Filled in with issue 3.
#pragma once
#include <stdint.h>
