/* dsm_impl_mmap.c: placeholder, being written. */
#include "dsmkit_int.h"
